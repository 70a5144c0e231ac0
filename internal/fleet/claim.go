package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/resilience"
)

// claim is this instance's answer for one half-open period of its local
// breaker (one Generation; the zero value matches none, generation 0
// being the initial closed state).
type claim struct {
	gen     uint64
	won     bool      // this instance runs the fleet's probe
	retryAt time.Time // when to ask the fleet again: lost, to claim; won, to renew the claim
}

// Bounds on how soon a lost claim is tried again.
const (
	// claimRecheck: after losing the compare-and-set to another instance,
	// read the entry again this soon, to learn when its probe times out.
	claimRecheck = time.Second
	// minRecheck keeps a waiting instance from asking in a loop.
	minRecheck = 50 * time.Millisecond
)

// mayProbe reports whether this instance may run the probe of its local
// breaker's half-open generation gen, claiming it from the fleet the first
// time it is asked; when not, it also returns when to ask again. Local
// callers wait for the claim's round trip, one claim at a time.
func (f *Breaker) mayProbe(gen uint64) (bool, time.Time) {
	f.claimMu.Lock()
	defer f.claimMu.Unlock()
	if c := f.claim; c.gen == gen && time.Now().Before(c.retryAt) {
		return c.won, c.retryAt
	}
	won, retryAt := f.claimProbe()
	f.claim = claim{gen: gen, won: won, retryAt: retryAt}
	return won, retryAt
}

// claimProbe asks the fleet's entry whether this instance may probe:
// it may when the entry is open and its cooldown is over, or a claimed
// probe has gone silent for probeTimeout (by the server's timestamp of the
// claim), and its compare-and-set update to half-open wins; and when the
// fleet is not open (no entry, an unreadable one, closed), since its own
// breaker then decides alone.
func (f *Breaker) claimProbe() (won bool, retryAt time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	entry, err := f.kv.Get(ctx, f.names.Consumer)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, f.renewAt(time.Now()) // nothing shared yet
	}
	if err != nil {
		f.log.Warn("fleet breaker: could not read the shared state; probing from this instance", "err", err)
		return true, f.renewAt(time.Now())
	}
	st, err := f.read(entry)
	if err != nil {
		f.log.Warn("fleet breaker: ignoring a malformed shared entry; probing from this instance", "err", err)
		return true, f.renewAt(time.Now())
	}
	now := time.Now()
	switch {
	case st.State == resilience.StateClosed:
		// This instance's trip did not reach the fleet (or the fleet's
		// close has not reached it yet): its own breaker decides.
		return true, time.Time{}
	case st.State == resilience.StateOpen && now.Before(st.Until):
		// A later trip than this instance has applied: the watch brings it.
		return false, f.retryAt(now, st.Until)
	case st.State == resilience.StateHalfOpen && st.Owner == f.id:
		// Still ours (a probe ended ignored and another task probes):
		// renew it below, so that the fleet does not take it for silent,
		// and learn of a takeover if it was taken for silent already.
	case st.State == resilience.StateHalfOpen:
		if silentAt := entry.Created().Add(f.probeTimeout); now.Before(silentAt) {
			return false, f.retryAt(now, silentAt)
		}
		f.log.Warn("fleet breaker: the probe of another instance went silent; taking over", "prober", st.Owner, "claimed", entry.Created())
	}
	st.State, st.Owner, st.At = resilience.StateHalfOpen, f.id, now.UTC()
	b, err := json.Marshal(st)
	if err == nil {
		_, err = f.kv.Update(ctx, f.names.Consumer, b, entry.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Another instance claimed it first.
		return false, f.retryAt(now, now.Add(claimRecheck))
	}
	if err != nil {
		// The bucket reads but does not write (no quorum, no permission):
		// as when it cannot be read, probe from this instance rather than
		// wait for a claim that nobody can store.
		f.log.Warn("fleet breaker: could not store the claim of the probe; probing from this instance", "err", err)
		return true, f.retryAt(now, now.Add(claimRecheck))
	}
	return true, f.renewAt(now)
}

// renewAt is when a won claim is asked again (and renewed): well within
// the probe timeout, so that a live prober is not taken over.
func (f *Breaker) renewAt(now time.Time) time.Time { return now.Add(f.probeTimeout / 2) }

// retryAt bounds when a lost claim is tried again: not in a loop, and not
// later than one probe timeout from now, whatever the entry says.
func (f *Breaker) retryAt(now, at time.Time) time.Time {
	if earliest := now.Add(minRecheck); at.Before(earliest) {
		at = earliest
	}
	if latest := now.Add(f.probeTimeout); at.After(latest) {
		at = latest
	}
	return at
}
