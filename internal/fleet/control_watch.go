package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// Timing of the control watch.
const (
	// controlSetupTimeout bounds each attempt to open the bucket, set the
	// watch up and read the commands stored so far.
	controlSetupTimeout = 5 * time.Second
	// controlRecheck is how often a process looks for the bucket while
	// there is none (no operator has sent a command yet), so that the
	// first command is acted on within about a second too.
	controlRecheck = time.Second
	// controlMaxRetry bounds the wait between two attempts after an error.
	controlMaxRetry = 30 * time.Second
	// maxSeenIDs bounds the command IDs remembered across keys.
	maxSeenIDs = 256
	// controlBucketCheck is how often a watch looks whether its bucket is
	// still the one it follows: the client's watch does not notice a
	// bucket deleted and created again, whose revisions start at 1.
	controlBucketCheck = 5 * time.Second
)

// controlWatch follows the control entries of one process.
type controlWatch struct {
	js       jetstream.JetStream
	fleetKey string
	keys     []string // fleetKey and the process's keys
	act      func(Order)
	log      *slog.Logger

	// Guarded by being used by one goroutine at a time: WatchControl's
	// caller until it returns, then the watch's goroutine.
	lastRev  map[string]handled // per key, the last entry handled
	ids      map[string]bool    // the IDs acted on
	caughtUp bool               // the commands stored before start-up were looked at
	bucket   time.Time          // when the bucket followed was created; zero if unknown
}

// bucketCreated is when kv's stream was created; zero if unknown.
func bucketCreated(ctx context.Context, kv jetstream.KeyValue) time.Time {
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok && s.StreamInfo() != nil {
		return s.StreamInfo().Created
	}
	return time.Time{}
}

// sameBucket reports whether the bucket is still the one the watch
// follows (true when that cannot be told).
func (w *controlWatch) sameBucket(ctx context.Context) bool {
	if w.bucket.IsZero() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, controlSetupTimeout)
	defer cancel()
	kv, err := bindControl(ctx, w.js)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return false
	case err != nil:
		return true
	}
	created := bucketCreated(ctx, kv)
	return created.IsZero() || created.Equal(w.bucket)
}

// WatchControl follows the operators' commands to the breaker of one
// process of n's durable consumer (named by any of processes: a process
// may be known by more than one ID) and to every process, until ctx ends
// or stop is called; stop waits for it to end. It calls act with each
// new command, once (by revision and ID), in the order they were stored,
// from one goroutine at a time.
//
// Of the commands stored before it starts, only the latest counts, and
// only if it is an open still in force (a close has nothing to undo in a
// process that starts): a process that starts during a manual open stays
// out. They are handed to act before WatchControl returns, when the
// bucket answers within controlSetupTimeout. An open whose until has
// passed is never acted on; a malformed command is ignored with a
// warning.
//
// The bucket may not exist yet (no operator has sent a command): it is
// looked for every controlRecheck. Other errors are logged and retried
// with a backoff; an error is returned only when the server refuses this
// user the bucket, since retrying would not help.
func WatchControl(ctx context.Context, js jetstream.JetStream, n queue.Names, processes []string, act func(Order), log *slog.Logger) (stop func(), err error) {
	switch {
	case js == nil || act == nil:
		return nil, errors.New("operator control: no JetStream context or no action")
	case n.TaskStream == "" || n.Consumer == "":
		return nil, errors.New("operator control: no task stream or durable consumer name")
	}
	if log == nil {
		log = slog.Default()
	}
	w := &controlWatch{js: js, fleetKey: ControlKey(n, ""), act: act, log: log,
		lastRev: map[string]handled{}, ids: map[string]bool{}}
	w.keys = []string{w.fleetKey}
	for _, p := range processes {
		if p == "" {
			continue
		}
		if k := ControlKey(n, clipID(p)); !slices.Contains(w.keys, k) {
			w.keys = append(w.keys, k)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	stop = func() { cancel(); <-done }

	kw, err := w.open(ctx)
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		cancel()
		return nil, fmt.Errorf("operator control: %w", err)
	case errors.Is(err, jetstream.ErrBucketNotFound):
		w.caughtUp = true // whatever comes was stored after start-up
	case err != nil:
		w.log.Warn("operator control: could not follow the commands yet; retrying", "err", err)
	}
	go w.run(ctx, kw, done)
	return stop, nil
}

// clipID cuts a process ID as SendCommand bounds it, so that an ID longer
// than an operator can name is still reachable by its first bytes.
func clipID(id string) string {
	if len(id) > MaxProcessID {
		return id[:MaxProcessID]
	}
	return id
}

// run follows the watch, setting it up again whenever it ends, until ctx ends.
func (w *controlWatch) run(ctx context.Context, kw *keyWatch, done chan<- struct{}) {
	defer close(done)
	for {
		if kw == nil {
			if kw = w.reopen(ctx); kw == nil {
				return
			}
		}
		w.follow(ctx, kw)
		kw = nil
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("operator control: the watch of the commands ended; setting it up again")
	}
}

// reopen tries open until it succeeds (nil when ctx ends or the server
// refuses this user the bucket): every controlRecheck while there is no
// bucket, with a backoff after errors.
func (w *controlWatch) reopen(ctx context.Context) *keyWatch {
	delay := controlRecheck
	for {
		wait := controlRecheck
		kw, err := w.open(ctx)
		switch {
		case err == nil:
			return kw
		case errors.Is(err, nats.ErrPermissionViolation):
			w.log.Error("operator control is off: this NATS user may not follow the commands (docs/security.md, Least privilege)", "err", err)
			return nil
		case errors.Is(err, jetstream.ErrBucketNotFound):
			w.caughtUp = true // the commands to come are all new
		default:
			if ctx.Err() == nil {
				w.log.Warn("operator control: could not follow the commands; retrying", "err", err, "retry_in", delay)
			}
			wait, delay = delay, min(2*delay, controlMaxRetry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// open opens the bucket, sets the watch up and hands the commands stored
// so far over, within controlSetupTimeout.
func (w *controlWatch) open(ctx context.Context) (*keyWatch, error) {
	setup, cancel := context.WithTimeout(ctx, controlSetupTimeout)
	defer cancel()
	kv, err := bindControl(setup, w.js)
	if err != nil {
		return nil, err
	}
	// The watch lives as long as the context it is created with: set it
	// up apart from the setup's deadline, under CallAPI, so that a
	// refused consumer create fails at once.
	wctx, stopWatch := context.WithCancel(ctx)
	var kw jetstream.KeyWatcher
	err = queue.CallAPI(setup, w.js, "", func(setup context.Context) error {
		type watch struct {
			w   jetstream.KeyWatcher
			err error
		}
		ready := make(chan watch, 1)
		go func() {
			// A copy: WatchFiltered prefixes the keys in place, and a
			// second watch of the same keys would be refused.
			kw, err := kv.WatchFiltered(wctx, slices.Clone(w.keys))
			ready <- watch{kw, err}
		}()
		select {
		case r := <-ready:
			kw = r.w
			return r.err
		case <-setup.Done():
			stopWatch() // a watch still returned is stopped with wctx
			return setup.Err()
		}
	})
	if err != nil {
		stopWatch()
		return nil, fmt.Errorf("watch %s in bucket %s: %w", w.keys[0], ControlBucket, err)
	}
	watch := &keyWatch{KeyWatcher: kw, cancel: stopWatch}
	w.bucket = bucketCreated(setup, kv)
	if err := w.catchUp(setup, watch); err != nil {
		watch.stop()
		return nil, err
	}
	return watch, nil
}

// catchUp reads the entries stored so far (until the watch's
// end-of-current-values marker) and hands the new ones over: the first
// time, only the latest, if it is an open in force.
func (w *controlWatch) catchUp(ctx context.Context, kw *keyWatch) error {
	var current []jetstream.KeyValueEntry
	for {
		select {
		case entry, ok := <-kw.Updates():
			if !ok {
				return errors.New("the watch of the commands ended before the current ones came")
			}
			if entry != nil {
				current = append(current, entry)
				continue
			}
		case <-ctx.Done():
			return fmt.Errorf("reading the current commands: %w", ctx.Err())
		}
		break
	}
	slices.SortFunc(current, func(a, b jetstream.KeyValueEntry) int { return cmp.Compare(a.Revision(), b.Revision()) })
	if w.caughtUp {
		for _, entry := range current {
			w.handle(entry)
		}
		return nil
	}
	w.caughtUp = true
	var latest *Order
	for _, entry := range current {
		if o, ok := w.take(entry); ok {
			latest = &o
		}
	}
	switch {
	case latest == nil:
	case latest.Op == OpOpen && latest.Until.After(time.Now()):
		w.remember(latest.ID)
		w.act(*latest)
	default:
		w.log.Debug("operator control: the latest command stored before start-up is not in force", "op", latest.Op, "id", latest.ID, "stored", latest.Stored)
	}
	return nil
}

// follow hands the watch's entries over until ctx ends or the watch does,
// and stops it.
func (w *controlWatch) follow(ctx context.Context, kw *keyWatch) {
	defer kw.stop()
	check := time.NewTicker(controlBucketCheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			if !w.sameBucket(ctx) {
				w.log.Warn("operator control: the bucket was deleted or created again; following it anew", "bucket", ControlBucket)
				return
			}
		case entry, ok := <-kw.Updates():
			if !ok {
				return
			}
			w.handle(entry)
		}
	}
}

// handle hands one entry over if it is a new command that can be acted on.
func (w *controlWatch) handle(entry jetstream.KeyValueEntry) {
	o, ok := w.take(entry)
	if !ok {
		return
	}
	if o.ID != "" && w.ids[o.ID] {
		w.log.Debug("operator control: command already acted on", "id", o.ID, "key", o.Key, "revision", o.Revision)
		return
	}
	if o.Op == OpOpen && !o.Until.After(time.Now()) {
		w.log.Warn("operator command ignored: its open ended already", "op", o.Op, "until", o.Until.UTC().Format(time.RFC3339),
			"by", o.By, "reason", o.Reason, "id", o.ID)
		return
	}
	w.remember(o.ID)
	w.act(o)
}

// remember notes a command's ID as acted on; one without an ID is told
// apart by its revision only.
func (w *controlWatch) remember(id string) {
	if id == "" {
		return
	}
	if len(w.ids) >= maxSeenIDs {
		clear(w.ids)
	}
	w.ids[id] = true
}

// handled is the last entry of a key handled: its revision and when the
// server stored it.
type handled struct {
	revision uint64
	stored   time.Time
}

// newer reports whether entry came after h: a higher revision, or one
// stored later (a bucket deleted and created again numbers its revisions
// from 1 again).
func (h handled) newer(entry jetstream.KeyValueEntry) bool {
	return entry.Revision() > h.revision || entry.Created().After(h.stored)
}

// take decodes an entry not handled before (by its key's revision and
// stored time), warning of one that is malformed.
func (w *controlWatch) take(entry jetstream.KeyValueEntry) (Order, bool) {
	if entry == nil || entry.Operation() != jetstream.KeyValuePut || !w.lastRev[entry.Key()].newer(entry) {
		return Order{}, false
	}
	w.lastRev[entry.Key()] = handled{entry.Revision(), entry.Created()}
	o, err := readOrder(entry, w.fleetKey)
	if err != nil {
		w.log.Warn("operator command ignored: malformed", "key", cleanText(entry.Key(), MaxProcessID), "revision", entry.Revision(), "err", err)
		return Order{}, false
	}
	return o, true
}
