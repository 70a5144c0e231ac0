package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// Announcer keeps one process's entry in the process registry: it writes
// the entry when Run starts, every refresh interval, and soon after
// Changed, and deletes it when Run's context ends. A failure is logged
// (a warning at most once per announceLogEvery) and retried at the next
// write; it never stops the process.
type Announcer struct {
	js       jetstream.JetStream
	names    queue.Names
	id       string
	key      string
	snapshot func() ProcessInfo
	log      *slog.Logger
	ttl      time.Duration // of the bucket, when the Announcer creates it
	replicas int
	refresh  time.Duration // 0: from the bucket's TTL
	changed  chan struct{} // a token when something notable changed

	mu       sync.Mutex // guards the failure log's state
	failures int        // writes failed since the last warning or success
	warned   time.Time
}

// Bounds and pace of an Announcer.
const (
	// announceLogEvery is how often a failing Announcer warns, at most.
	announceLogEvery = time.Minute
	// minAnnounceGap is the shortest time between two writes that
	// Changed asks for: a flapping breaker does not flood the bucket.
	minAnnounceGap = 200 * time.Millisecond
	// removeTimeout bounds the delete at the end of Run.
	removeTimeout = 2 * time.Second
	// maxOpenRetry bounds the wait between two attempts to open the
	// bucket; deniedOpenRetry is the wait after a permission denial.
	maxOpenRetry    = 30 * time.Second
	deniedOpenRetry = 5 * time.Minute
)

// AnnounceOption configures an Announcer.
type AnnounceOption func(*Announcer) error

// WithAnnounceLogger sets the logger. Default slog.Default().
func WithAnnounceLogger(log *slog.Logger) AnnounceOption {
	return func(a *Announcer) error {
		if log == nil {
			return errors.New("nil logger")
		}
		a.log = log
		return nil
	}
}

// WithRefresh sets how often the entry is rewritten. Default: the
// shorter of DefaultRefresh and a third of the bucket's TTL.
func WithRefresh(d time.Duration) AnnounceOption {
	return func(a *Announcer) error {
		if d <= 0 {
			return fmt.Errorf("refresh %v: want a positive duration", d)
		}
		a.refresh = d
		return nil
	}
}

// WithProcessTTL sets the TTL of the bucket when the Announcer creates
// it (an existing bucket keeps its own). Default DefaultProcessTTL.
func WithProcessTTL(d time.Duration) AnnounceOption {
	return func(a *Announcer) error {
		if d < minProcessTTL || d > maxProcessTTL {
			return fmt.Errorf("process TTL %v: want %v to %v", d, minProcessTTL, maxProcessTTL)
		}
		a.ttl = d
		return nil
	}
}

// WithReplicas sets the replicas of the bucket when the Announcer
// creates it: the streams' (streams.replicas). Default 1.
func WithReplicas(n int) AnnounceOption {
	return func(a *Announcer) error {
		if n < 0 {
			return fmt.Errorf("replicas %d: want 0 or more", n)
		}
		a.replicas = n
		return nil
	}
}

// NewAnnouncer returns an Announcer of process id, pulling from the
// durable consumer n names, whose entry snapshot describes at each write
// (the Announcer sets its ID, stream and consumer, and bounds the rest).
// It does not touch the server: Run does.
func NewAnnouncer(js jetstream.JetStream, n queue.Names, id string, snapshot func() ProcessInfo, opts ...AnnounceOption) (*Announcer, error) {
	switch {
	case js == nil:
		return nil, errors.New("process registry: no JetStream context")
	case id == "":
		return nil, errors.New("process registry: empty process id")
	case snapshot == nil:
		return nil, errors.New("process registry: no snapshot function")
	case n.TaskStream == "" || n.Consumer == "":
		return nil, errors.New("process registry: no task stream or durable consumer name")
	}
	// The ID as readers decode it (valid UTF-8, clipped), so that its key
	// is the one they expect.
	id = clip(id, maxText)
	a := &Announcer{js: js, names: n, id: id, key: processKey(n, id), snapshot: snapshot, log: slog.Default(),
		ttl: DefaultProcessTTL, changed: make(chan struct{}, 1)}
	for _, opt := range opts {
		if err := opt(a); err != nil {
			return nil, fmt.Errorf("process registry: %w", err)
		}
	}
	return a, nil
}

// ID is the process's ID in the registry.
func (a *Announcer) ID() string { return a.id }

// Changed asks for a write soon (at once, unless one was made within
// minAnnounceGap): something notable changed, such as the breaker's
// state. It never blocks.
func (a *Announcer) Changed() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// Run keeps the entry until ctx is done, then deletes it (waiting at
// most removeTimeout) and returns. It opens the bucket first, creating
// it if there is none, and tries again with a growing delay while it
// cannot.
func (a *Announcer) Run(ctx context.Context) {
	var kv jetstream.KeyValue
	refresh := a.refresh
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastPut time.Time
	openDelay := time.Second
	for {
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-a.changed:
			if kv == nil {
				continue // not open: the next attempt is due on the timer
			}
			if gap := time.Since(lastPut); !lastPut.IsZero() && gap < minAnnounceGap {
				timer.Reset(minAnnounceGap - gap)
				continue
			}
		}
		if ctx.Err() != nil {
			if kv != nil {
				a.remove(kv)
			}
			return
		}
		if kv == nil {
			var ttl time.Duration
			var err error
			if kv, ttl, err = a.open(ctx); err != nil {
				if ctx.Err() == nil {
					a.failed("open the bucket", err)
				}
				if errors.Is(err, nats.ErrPermissionViolation) {
					// Lasts until an operator changes the permissions; each
					// attempt is a refusal in the server's and this log.
					timer.Reset(deniedOpenRetry)
				} else {
					timer.Reset(openDelay)
					openDelay = min(2*openDelay, maxOpenRetry)
				}
				continue
			}
			if refresh == 0 {
				refresh = min(DefaultRefresh, processTTL(ttl)/3)
			}
		}
		lastPut = time.Now()
		if err := a.put(ctx, kv); err != nil {
			if ctx.Err() == nil {
				a.failed("write the entry", err)
			}
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				kv = nil // the bucket was deleted: open (create) it again next time
			}
		} else {
			a.succeeded()
		}
		timer.Reset(refresh)
	}
}

// open opens the bucket, creating it when there is none, and returns it
// with its TTL.
func (a *Announcer) open(ctx context.Context) (jetstream.KeyValue, time.Duration, error) {
	var kv jetstream.KeyValue
	var ttl time.Duration
	err := queue.RetrySetup(ctx, a.log, "process registry bucket "+ProcessBucket, func(ctx context.Context) error {
		// Several API calls: a denial of any of them fails at once.
		return queue.CallAPI(ctx, a.js, "", func(ctx context.Context) error {
			var err error
			kv, err = a.js.KeyValue(ctx, ProcessBucket)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				kv, err = a.js.CreateKeyValue(ctx, processBucketConfig(a.ttl, a.replicas))
				if errors.Is(err, jetstream.ErrBucketExists) {
					kv, err = a.js.KeyValue(ctx, ProcessBucket) // created meanwhile, otherwise
				}
			}
			if err != nil {
				return err
			}
			st, err := kv.Status(ctx)
			if err != nil {
				return err
			}
			ttl = st.TTL()
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("process registry bucket %s: %w", ProcessBucket, err)
	}
	return kv, ttl, nil
}

// put writes the entry as the snapshot describes the process now.
func (a *Announcer) put(ctx context.Context, kv jetstream.KeyValue) error {
	p := a.snapshot()
	p.ID, p.Stream, p.Consumer = a.id, a.names.TaskStream, a.names.Consumer
	p.LastSeen = time.Now().UTC()
	p = p.bounded()
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode process entry: %w", err)
	}
	if len(b) > MaxProcessValue {
		return fmt.Errorf("process entry of %d bytes, more than %d", len(b), MaxProcessValue)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := kv.Put(ctx, a.key, b); err != nil {
		return fmt.Errorf("write process entry %s: %w", a.key, err)
	}
	return nil
}

// remove deletes the entry, waiting at most removeTimeout. A write still
// under way was sent before on the same connection: the server stores it
// first.
func (a *Announcer) remove(kv jetstream.KeyValue) {
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	if err := kv.Delete(ctx, a.key); err != nil {
		a.log.Warn("process registry: could not remove this process's entry; it expires by itself", "key", a.key, "err", err)
	}
}

// failed logs a failure: a warning at once, then at most every
// announceLogEvery with the number of failures since; debug otherwise.
func (a *Announcer) failed(what string, err error) {
	a.mu.Lock()
	a.failures++
	n, warn := a.failures, time.Since(a.warned) >= announceLogEvery
	if warn {
		a.warned, a.failures = time.Now(), 0
	}
	a.mu.Unlock()
	if warn {
		a.log.Warn("process registry: could not "+what+"; producer status does not list this process (retrying)", "err", err, "failures", n)
		return
	}
	a.log.Debug("process registry: could not "+what, "err", err)
}

// succeeded notes a write that went through, saying so after failures.
func (a *Announcer) succeeded() {
	a.mu.Lock()
	recovered := !a.warned.IsZero()
	a.warned, a.failures = time.Time{}, 0
	a.mu.Unlock()
	if recovered {
		a.log.Info("process registry: this process's entry is written again")
	}
}
