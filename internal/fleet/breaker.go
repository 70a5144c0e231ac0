package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// Breaker is one circuit breaker for a whole fleet of consumer processes
// sharing a durable consumer. It is a layer over each process's own
// resilience.Breaker, which keeps deciding from the process's outcomes,
// and shares its state with JetStream's own mechanisms:
//
//   - a trip of the local breaker is written to a Key-Value entry (bucket
//     BreakerBucket, key: the durable consumer) and pauses the consumer on
//     the server until the cooldown ends, so every instance stops receiving
//     at once, and receives again even if the instance that tripped died;
//   - Watch applies the entry's changes to the local breaker;
//   - when the cooldown ends, the instance that wins a compare-and-set
//     update of the entry to half-open runs the one probe of the fleet;
//     the others neither pull nor start a task until the entry changes;
//   - a probe that succeeds writes the close (and resumes the consumer)
//     before this process lets any other task run.
//
// Workers and the puller use the Breaker in place of the local breaker;
// nothing may acquire the local breaker directly, or it could run a probe
// this instance did not claim.
type Breaker struct {
	local        *resilience.Breaker
	js           jetstream.JetStream
	kv           jetstream.KeyValue
	names        queue.Names
	id           string
	log          *slog.Logger
	probeTimeout time.Duration
	maxCooldown  time.Duration

	claimMu sync.Mutex // held across a claim's round trip: one claim at a time
	claim   claim      // the latest claim; guarded by claimMu

	mu      sync.Mutex
	changed chan struct{} // closed at every change of the local breaker
}

// DefaultProbeTimeout is how long a claimed probe may go without closing or
// re-opening the breaker before another instance may claim it.
const DefaultProbeTimeout = 2 * time.Minute

// opTimeout bounds each round trip to the Key-Value bucket and the
// consumer's pause.
const opTimeout = 5 * time.Second

// Option configures a Breaker.
type Option func(*Breaker) error

// WithProbeTimeout sets how long a claimed probe may go without closing or
// re-opening the breaker before another instance may claim it (the prober
// may have died). Default DefaultProbeTimeout.
func WithProbeTimeout(d time.Duration) Option {
	return func(f *Breaker) error {
		if d <= 0 {
			return fmt.Errorf("probe timeout %v: want a positive duration", d)
		}
		f.probeTimeout = d
		return nil
	}
}

// WithMaxCooldown bounds how long an entry can keep the breaker open,
// counted from when the server stored it: the entry is shared state that
// anyone with write access to the bucket can change, and must not stop
// the fleet for longer than the breaker itself would. Default: the local
// breaker's MaxCooldown.
func WithMaxCooldown(d time.Duration) Option {
	return func(f *Breaker) error {
		if d <= 0 {
			return fmt.Errorf("max cooldown %v: want a positive duration", d)
		}
		f.maxCooldown = d
		return nil
	}
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(log *slog.Logger) Option {
	return func(f *Breaker) error {
		if log == nil {
			return errors.New("nil logger")
		}
		f.log = log
		return nil
	}
}

// NewBreaker opens (creating if needed) the breaker bucket and layers the
// fleet's state over local. id names this instance (host/pid) and must
// differ between instances; names.Consumer is the entry's key.
func NewBreaker(ctx context.Context, js jetstream.JetStream, names queue.Names, id string, local *resilience.Breaker, opts ...Option) (*Breaker, error) {
	switch {
	case local == nil:
		return nil, errors.New("fleet breaker: no local breaker")
	case id == "":
		return nil, errors.New("fleet breaker: empty instance id")
	case names.Consumer == "":
		return nil, errors.New("fleet breaker: no durable consumer name")
	}
	f := &Breaker{local: local, js: js, names: names, id: id, log: slog.Default(),
		probeTimeout: DefaultProbeTimeout, maxCooldown: local.MaxCooldown(), changed: make(chan struct{})}
	for _, opt := range opts {
		if err := opt(f); err != nil {
			return nil, fmt.Errorf("fleet breaker: %w", err)
		}
	}
	err := queue.RetrySetup(ctx, f.log, "fleet breaker bucket "+BreakerBucket, func(ctx context.Context) error {
		// Several API calls: a denial of any of them fails at once.
		return queue.CallAPI(ctx, js, "", func(ctx context.Context) error {
			var err error
			f.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BreakerBucket, Description: "nodeq fleet-wide circuit breakers", History: 1})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	local.Observe(f.observe)
	return f, nil
}

// Local is the process's own breaker under the layer, for its state and
// listeners. Acquire tasks through the layer, never through it.
func (f *Breaker) Local() *resilience.Breaker { return f.local }

// State is the local breaker's state: half-open too while another
// instance probes.
func (f *Breaker) State() resilience.State { return f.local.State() }

// MaxCooldown is the longest the local breaker stays open.
func (f *Breaker) MaxCooldown() time.Duration { return f.local.MaxCooldown() }

// Name is the local breaker's name.
func (f *Breaker) Name() string { return f.local.Name() }

// Listen adds f to what the local breaker tells of its state changes,
// those applied from the fleet included.
func (f *Breaker) Listen(fn func(name string, from, to resilience.State)) { f.local.Listen(fn) }

// maxTries bounds how often TryAcquire asks the local breaker again when
// its state changed while it asked.
const maxTries = 4

// TryAcquire reports at once whether a task may run now, as
// resilience.Breaker.TryAcquire does, except that when half-open a task
// becomes the probe only in the instance that claimed the fleet's probe.
func (f *Breaker) TryAcquire() (report func(resilience.Outcome), probe bool, ok bool) {
	for range maxTries {
		before := f.local.Snapshot()
		if before.State == resilience.StateHalfOpen {
			if won, _ := f.mayProbe(before.Generation); !won {
				return nil, false, false
			}
		}
		report, probe, ok := f.local.TryAcquire()
		if !ok {
			return nil, false, false
		}
		if f.local.Snapshot().Generation == before.Generation {
			return f.reporter(report, probe, before.Generation), probe, true
		}
		// Let run across a change (the cooldown ended, the fleet's state
		// came in): undo, and ask again under the new state.
		report(resilience.OutcomeIgnored)
	}
	return nil, false, false
}

// Acquire blocks until a task may run, as resilience.Breaker.Acquire
// does, except that when half-open it waits while another instance of
// the fleet probes.
func (f *Breaker) Acquire(ctx context.Context) (func(resilience.Outcome), error) {
	for {
		changed := f.changes()
		before := f.local.Snapshot()
		if before.State == resilience.StateHalfOpen {
			if won, retryAt := f.mayProbe(before.Generation); !won {
				if err := waitUntil(ctx, changed, retryAt); err != nil {
					return nil, err
				}
				continue
			}
		}
		report, err := f.local.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		if after := f.local.Snapshot(); after.Generation == before.Generation {
			return f.reporter(report, after.State == resilience.StateHalfOpen, after.Generation), nil
		}
		report(resilience.OutcomeIgnored) // let run across a change: ask again
	}
}

// Allowance blocks while nothing may be pulled and returns how many
// messages may be, as resilience.Breaker.Allowance does, except that when
// half-open it allows the probe's pull only in the instance that claimed
// the fleet's probe, and blocks in the others.
func (f *Breaker) Allowance(ctx context.Context) (int, error) {
	for {
		n, err := f.local.Allowance(ctx)
		if err != nil {
			return 0, err
		}
		changed := f.changes()
		snap := f.local.Snapshot()
		switch snap.State {
		case resilience.StateClosed:
			return n, nil
		case resilience.StateOpen:
			continue // opened meanwhile
		}
		won, retryAt := f.mayProbe(snap.Generation)
		if won {
			return 1, nil
		}
		if err := waitUntil(ctx, changed, retryAt); err != nil {
			return 0, err
		}
	}
}

// reporter wraps the report of a task let run in generation gen: a probe
// that succeeds publishes the close first.
func (f *Breaker) reporter(report func(resilience.Outcome), probe bool, gen uint64) func(resilience.Outcome) {
	if !probe {
		return report
	}
	var once sync.Once
	return func(o resilience.Outcome) {
		once.Do(func() {
			if o == resilience.OutcomeSuccess && f.local.Snapshot().Generation == gen {
				// Tell the fleet before any task here runs again (none
				// does while the probe runs): every task that runs after
				// the probe then runs after the close is stored.
				f.publishClose()
			}
			report(o)
		})
	}
}

// observe is told every change of the local breaker: it wakes the waiters
// and publishes the local breaker's own trips (not those it took from the
// fleet, which would echo them).
func (f *Breaker) observe(t resilience.Transition) {
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if t.To == resilience.StateOpen && !t.Applied {
		f.publishTrip(t.Until, t.Trips)
	}
}

// changes returns a channel closed at the next change of the local breaker.
func (f *Breaker) changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// waitUntil waits for changed to close or the time to come.
func waitUntil(ctx context.Context, changed <-chan struct{}, at time.Time) error {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// put writes st as this instance's.
func (f *Breaker) put(ctx context.Context, st SharedState) error {
	st.Owner, st.At = f.id, time.Now().UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode fleet breaker state: %w", err)
	}
	if _, err := f.kv.Put(ctx, f.names.Consumer, b); err != nil {
		return fmt.Errorf("write fleet breaker entry %s: %w", f.names.Consumer, err)
	}
	return nil
}

// publishTrip publishes an open breaker and pauses the consumer until the cooldown ends.
// Each call has its own deadline: a slow bucket must not leave the
// server-side pause without time.
func (f *Breaker) publishTrip(until time.Time, trips int) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := f.put(ctx, SharedState{State: resilience.StateOpen, Until: until, Trips: trips}); err != nil {
		f.log.Error("fleet breaker: could not publish the trip; other consumers keep pulling", "err", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := Pause(ctx, f.js, f.names, until); err != nil {
		f.log.Error("fleet breaker: could not pause the consumer on the server", "err", err)
	}
}

// publishClose publishes that the probe succeeded and resumes the consumer.
func (f *Breaker) publishClose() {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := f.put(ctx, SharedState{State: resilience.StateClosed}); err != nil {
		f.log.Error("fleet breaker: could not publish the close", "err", err)
	}
	if err := Resume(ctx, f.js, f.names); err != nil {
		f.log.Warn("fleet breaker: could not resume the consumer", "err", err)
	}
}

// read decodes and bounds an entry (see readSharedState).
func (f *Breaker) read(entry jetstream.KeyValueEntry) (SharedState, error) {
	return readSharedState(entry, f.maxCooldown)
}
