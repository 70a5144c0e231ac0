package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/resilience"
)

// watchSetupTimeout bounds how long Watch waits for the server to set up
// the watch (it creates a consumer on the bucket's stream).
const watchSetupTimeout = 30 * time.Second

// Watch applies every change of the fleet's entry to the local breaker
// until ctx is done, starting with the current value, so that an instance
// joining during an open breaker stays out too. Setting the watch up fails
// after watchSetupTimeout if the server does not answer. A watch that the
// client library ends later (its ordered consumer could not be recreated,
// the bucket was deleted) is logged and set up again, with a backoff.
func (f *Breaker) Watch(ctx context.Context) error {
	w, err := f.startWatch(ctx)
	if err != nil {
		return err
	}
	// The current value first: a process that joins pulls nothing before
	// it knows whether the fleet is open.
	if err := f.catchUp(ctx, w); err != nil {
		w.stop()
		return err
	}
	go func() {
		for {
			f.follow(ctx, w)
			if ctx.Err() != nil {
				return
			}
			f.log.Error("fleet breaker: the watch of the shared entry ended; setting it up again")
			for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(delay):
				}
				if w, err = f.startWatch(ctx); err == nil {
					break
				}
				f.log.Warn("fleet breaker: could not watch the shared entry; retrying", "err", err, "retry_in", min(2*delay, 30*time.Second))
			}
		}
	}()
	return nil
}

// catchUp applies the entry's current value, if any, waiting at most
// watchSetupTimeout for the watch's end-of-current-values marker (a nil
// entry, sent also when the key has no value).
func (f *Breaker) catchUp(ctx context.Context, w *keyWatch) error {
	timer := time.NewTimer(watchSetupTimeout)
	defer timer.Stop()
	for {
		select {
		case entry, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch fleet breaker entry %s: ended before its current value came", f.names.Consumer)
			}
			if entry == nil {
				return nil
			}
			f.apply(entry)
		case <-timer.C:
			return fmt.Errorf("watch fleet breaker entry %s: no current value from JetStream within %v", f.names.Consumer, watchSetupTimeout)
		case <-ctx.Done():
			return fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, ctx.Err())
		}
	}
}

// follow applies the watch's entries until ctx is done or the watch ends,
// and stops it.
func (f *Breaker) follow(ctx context.Context, w *keyWatch) {
	defer w.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case entry, ok := <-w.Updates():
			if !ok {
				return
			}
			f.apply(entry)
		}
	}
}

// keyWatch is a watch with the cancel of the context it lives in.
type keyWatch struct {
	jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (w *keyWatch) stop() {
	_ = w.Stop()
	w.cancel()
}

// startWatch sets a watch of the entry up, waiting at most watchSetupTimeout.
func (f *Breaker) startWatch(ctx context.Context) (*keyWatch, error) {
	// The watch lives as long as the context it is created with, so that
	// context cannot carry the setup's deadline: wait for the setup apart.
	wctx, stop := context.WithCancel(ctx)
	type watch struct {
		w   jetstream.KeyWatcher
		err error
	}
	ready := make(chan watch, 1)
	go func() {
		w, err := f.kv.Watch(wctx, f.names.Consumer)
		ready <- watch{w, err}
	}()
	timer := time.NewTimer(watchSetupTimeout)
	defer timer.Stop()
	select {
	case r := <-ready:
		if r.err != nil {
			stop()
			return nil, fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, r.err)
		}
		return &keyWatch{KeyWatcher: r.w, cancel: stop}, nil
	case <-timer.C:
		stop() // ends the setup request; a watch it still returns is stopped with wctx
		return nil, fmt.Errorf("watch fleet breaker entry %s: no answer from JetStream within %v", f.names.Consumer, watchSetupTimeout)
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, ctx.Err())
	}
}

// apply takes one entry of the watch: open and closed go to the local
// breaker (as Applied changes, which are not published again); half-open
// (another's claim) makes a closed or open breaker half-open, to wait for
// the claim's outcome; a malformed entry or an
// unknown state is ignored with a warning. This instance's own entries
// are skipped: they tell what its breaker did already, and one that
// arrives late (a trip whose cooldown is over) would undo what it did since.
func (f *Breaker) apply(entry jetstream.KeyValueEntry) {
	if entry == nil || entry.Operation() != jetstream.KeyValuePut {
		return
	}
	st, err := f.read(entry)
	if err != nil {
		f.log.Warn("fleet breaker: ignoring a malformed shared entry", "err", err, "revision", entry.Revision())
		return
	}
	if st.Owner == f.id {
		return
	}
	switch st.State {
	case resilience.StateOpen:
		f.local.Apply(true, st.Until, st.Trips)
	case resilience.StateHalfOpen:
		// Another instance claimed the probe: a breaker that missed the
		// trip (it joined, or its watch restarted) goes half-open too, so
		// that it waits for the claim's outcome instead of pulling freely.
		// An open breaker goes half-open and asks for the claim; a
		// half-open one is unchanged.
		f.local.Apply(true, entry.Created(), st.Trips)
	case resilience.StateClosed:
		f.local.Apply(false, time.Time{}, 0)
	}
}
