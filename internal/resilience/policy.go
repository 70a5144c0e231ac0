package resilience

import (
	"math/rand/v2"
	"time"
)

// Policy decides in-process retries of one delivery.
type Policy interface {
	// NextRetry is called after failed attempt number attempt (1-based). It
	// returns how long to wait before the next attempt, or false when no
	// attempt is left.
	NextRetry(attempt int) (time.Duration, bool)
}

// None never retries: one attempt.
func None() Policy { return fixed{attempts: 1} }

// Fixed makes up to attempts attempts (the first included), waiting delay between them.
func Fixed(delay time.Duration, attempts int) Policy { return fixed{delay: delay, attempts: attempts} }

type fixed struct {
	delay    time.Duration
	attempts int
}

func (f fixed) NextRetry(attempt int) (time.Duration, bool) {
	if attempt >= f.attempts {
		return 0, false
	}
	return f.delay, true
}

// Exponential waits Base, Base*Multiplier, Base*Multiplier², ... capped at
// Max, for up to Attempts attempts (the first included). Jitter j in [0,1]
// spreads each delay uniformly over [d*(1-j), d*(1+j)], still capped at Max.
type Exponential struct {
	Base       time.Duration
	Multiplier float64
	Max        time.Duration
	Attempts   int
	Jitter     float64
	// Rand returns a number in [0,1); nil means math/rand/v2.
	Rand func() float64
}

// DefaultPolicy is nodeq's default: 100ms, x2, at most 400ms, 3 attempts, no jitter.
func DefaultPolicy() *Exponential {
	return &Exponential{Base: 100 * time.Millisecond, Multiplier: 2, Max: 400 * time.Millisecond, Attempts: 3}
}

// NextRetry implements Policy.
func (e *Exponential) NextRetry(attempt int) (time.Duration, bool) {
	if attempt >= e.Attempts {
		return 0, false
	}
	d := float64(e.Base)
	for i := 1; i < attempt && d < float64(e.Max); i++ {
		d *= e.Multiplier
	}
	if e.Jitter > 0 {
		r := rand.Float64
		if e.Rand != nil {
			r = e.Rand
		}
		d *= 1 + e.Jitter*(2*r()-1)
	}
	if e.Max > 0 && d > float64(e.Max) {
		d = float64(e.Max)
	}
	return time.Duration(d), true
}

// Redelivery decides what happens when a delivery's attempts are spent on a
// transient error: the task is handed back to JetStream to be delivered
// again (perhaps to another worker) after a delay, until MaxDeliveries.
type Redelivery struct {
	// MaxDeliveries is how many deliveries a task gets before it is
	// dead-lettered as retries exhausted. Default 3.
	MaxDeliveries int
	// Backoff[i] is the delay before delivery i+2; the last value repeats.
	// Default 5s, 30s, 2m.
	Backoff []time.Duration
}

// DefaultRedelivery returns the default redelivery settings.
func DefaultRedelivery() Redelivery {
	return Redelivery{MaxDeliveries: 3, Backoff: []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute}}
}

// Next returns the delay before the next delivery after delivery number
// delivered (1-based) failed, or false when the task should be dead-lettered.
func (r Redelivery) Next(delivered int) (time.Duration, bool) {
	if delivered >= r.MaxDeliveries {
		return 0, false
	}
	if len(r.Backoff) == 0 {
		return 0, true
	}
	return r.Backoff[min(max(delivered-1, 0), len(r.Backoff)-1)], true
}
