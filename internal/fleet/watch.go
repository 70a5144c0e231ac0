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
// after watchSetupTimeout if the server does not answer.
func (f *Breaker) Watch(ctx context.Context) error {
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
	var w jetstream.KeyWatcher
	select {
	case r := <-ready:
		if r.err != nil {
			stop()
			return fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, r.err)
		}
		w = r.w
	case <-timer.C:
		stop() // ends the setup request; a watch it still returns is stopped with wctx
		return fmt.Errorf("watch fleet breaker entry %s: no answer from JetStream within %v", f.names.Consumer, watchSetupTimeout)
	case <-ctx.Done():
		stop()
		return fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, ctx.Err())
	}
	go func() {
		defer stop()
		defer func() { _ = w.Stop() }()
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
	}()
	return nil
}

// apply takes one entry of the watch: open and closed go to the local
// breaker (as Applied changes, which are not published again); half-open
// (a claim) changes nothing until its outcome; a malformed entry or an
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
	case resilience.StateClosed:
		f.local.Apply(false, time.Time{}, 0)
	}
}
