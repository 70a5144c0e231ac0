package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
)

// ForceOpen opens the whole fleet's breaker by an operator's command
// until the given time (at most resilience.MaxForcedOpen from now): the
// local breaker is forced open (no task starts and no probe runs here
// before then; see resilience.Breaker.ForceOpen), the shared entry says
// open until then, and the consumer is paused on the server until then,
// so that a process that missed the command stops too. When the time
// comes, the fleet probes as after a trip: one process claims the probe.
// Every process given the command does the same, and their writes agree.
// The local breaker is open when it returns; an error says the shared
// entry or the pause did not follow.
func (f *Breaker) ForceOpen(ctx context.Context, until time.Time) error {
	f.local.ForceOpen(until)
	snap := f.local.Snapshot()
	if snap.State != resilience.StateOpen || !snap.Forced {
		return nil // until was not in the future
	}
	var pause error
	if pausedUntil(ctx, f).Before(snap.Until) { // never shorten an operator's longer pause (producer pause)
		pause = Pause(ctx, f.js, f.names, snap.Until)
	}
	return errors.Join(
		f.put(ctx, SharedState{State: resilience.StateOpen, Until: snap.Until, Trips: snap.Trips}), pause)
}

// pausedUntil is when the server-side pause of the durable consumer ends;
// zero when it is not paused or that cannot be read.
func pausedUntil(ctx context.Context, f *Breaker) time.Time {
	c, err := f.js.Consumer(ctx, f.names.TaskStream, f.names.Consumer)
	if err != nil {
		return time.Time{}
	}
	if ci := c.CachedInfo(); ci != nil && ci.Paused {
		return time.Now().Add(ci.PauseRemaining)
	}
	return time.Time{}
}

// Reset closes the whole fleet's breaker by an operator's command: the
// local breaker at once (resilience.Breaker.Reset), then the shared
// entry, and the consumer is resumed on the server. The local breaker is
// closed when it returns; an error says the shared entry or the resume
// did not follow.
func (f *Breaker) Reset(ctx context.Context) error {
	f.local.Reset()
	var resume error
	// A pause longer than any the breaker makes is an operator's
	// (producer pause): producer resume ends it, not a breaker close.
	if until := pausedUntil(ctx, f); !until.IsZero() && !until.After(time.Now().Add(MaxManualOpen+time.Minute)) {
		resume = Resume(ctx, f.js, f.names)
	}
	return errors.Join(f.put(ctx, SharedState{State: resilience.StateClosed}), resume)
}
