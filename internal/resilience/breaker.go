package resilience

import (
	"context"
	"math"
	"sync"
	"time"
)

// State is a circuit breaker state.
type State int

// Breaker states.
const (
	// StateClosed: tasks run and are pulled freely.
	StateClosed State = iota
	// StateOpen: nothing is pulled and no task starts until the cooldown ends.
	StateOpen
	// StateHalfOpen: one probe task may run; its outcome closes or reopens the breaker.
	StateHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half-open"
	}
	return "unknown"
}

// Counts are the outcomes seen since the breaker last closed. With an
// Interval set, Successes and Failures start again from zero every Interval;
// ConsecutiveFailures runs on until a success.
type Counts struct {
	Successes           uint32
	Failures            uint32
	ConsecutiveFailures uint32
}

// Requests is how many outcomes were counted: Successes + Failures.
func (c Counts) Requests() uint32 { return c.Successes + c.Failures }

// Outcome is what a task's run tells the breaker.
type Outcome int

const (
	// OutcomeSuccess: the downstream worked. It resets the consecutive failures.
	OutcomeSuccess Outcome = iota
	// OutcomeFailure: transient failures used up the delivery's attempts.
	OutcomeFailure
	// OutcomeIgnored: says nothing about the downstream (a permanent error, the
	// task's own fault; or a shutdown).
	OutcomeIgnored
)

// BreakerSettings configure a Breaker. Zero values mean defaults.
type BreakerSettings struct {
	// Name identifies the breaker (the subscription) in callbacks.
	Name string
	// ReadyToTrip decides, after each failure, whether to open. Default:
	// 5 consecutive failures. See ConsecutiveFailures, FailureRate, AnyOf.
	ReadyToTrip func(Counts) bool
	// Interval, while closed, clears Successes and Failures every Interval
	// so that a failure rate describes recent outcomes. 0 keeps them from
	// the moment the breaker closed.
	Interval time.Duration
	// Cooldown is how long the breaker stays open after its first trip.
	// Each further trip without closing in between doubles it. Default 5s.
	Cooldown time.Duration
	// MaxCooldown caps the growing cooldown, and so bounds how long work
	// waits after the downstream recovers. Default 30s.
	MaxCooldown time.Duration
	// ProbeLease is how long a half-open breaker waits for the one task
	// it let be pulled as its probe (Allowance returned 1) before it lets
	// another be pulled: the pull may have found the stream empty. Default 3s.
	ProbeLease time.Duration
	// OnStateChange is called, outside the breaker's lock, on every change.
	OnStateChange func(name string, from, to State)
	// Shared, if set, makes the breaker one of a fleet: its trips are
	// published, and only the instance that wins ClaimProbe runs the
	// half-open probe. Remote changes come in through Apply.
	Shared Shared
}

// Shared is the fleet-wide state of a breaker, kept somewhere all
// instances see (nodeq keeps it in a JetStream Key-Value bucket).
type Shared interface {
	// Trip publishes that this instance opened the breaker until the given time.
	Trip(until time.Time, trips int)
	// ClaimProbe tries to make this instance the only one to probe; false
	// means another instance probes (or already closed the breaker).
	ClaimProbe() bool
	// Close publishes that this instance's probe succeeded.
	Close()
}

// Breaker is a circuit breaker shared by the workers of one subscription.
// Workers call Acquire before running a task and report its Outcome; the
// pull loop calls Allowance before pulling, so an open breaker pauses the
// subscription.
type Breaker struct {
	s BreakerSettings

	mu         sync.Mutex
	state      State
	counts     Counts
	countsEnd  time.Time // when Interval clears the counts next
	trips      int       // trips since the breaker last closed
	openUntil  time.Time // when Open ends
	probe      bool      // a half-open probe is running
	leased     time.Time // half-open: when Allowance let the probe be pulled
	generation uint64    // bumped on every state change; stale outcomes are ignored
	changed    chan struct{}
	remote     bool      // half-open, and another instance of the fleet probes
	claimedAt  time.Time // when this instance last tried to claim the probe
	listeners  []func(name string, from, to State)
}

// NewBreaker returns a closed breaker.
func NewBreaker(s BreakerSettings) *Breaker {
	if s.ReadyToTrip == nil {
		s.ReadyToTrip = ConsecutiveFailures(5)
	}
	if s.Cooldown <= 0 {
		s.Cooldown = DefaultCooldown
	}
	if s.MaxCooldown < s.Cooldown {
		s.MaxCooldown = max(DefaultMaxCooldown, s.Cooldown)
	}
	if s.ProbeLease <= 0 {
		s.ProbeLease = 3 * time.Second
	}
	return &Breaker{s: s, changed: make(chan struct{}), countsEnd: time.Now().Add(s.Interval)}
}

// Default cooldowns: short, because a probe costs little (one task's
// delivery, not charged toward its dead-lettering).
const (
	DefaultCooldown    = 5 * time.Second
	DefaultMaxCooldown = 30 * time.Second
)

// ConsecutiveFailures trips after n consecutive failures.
func ConsecutiveFailures(n uint32) func(Counts) bool {
	return func(c Counts) bool { return c.ConsecutiveFailures >= n }
}

// FailureRate trips once at least minRequests outcomes have been counted and
// failures make up at least ratio of them. Pair it with an Interval, or the
// rate covers everything since the breaker last closed.
func FailureRate(ratio float64, minRequests uint32) func(Counts) bool {
	return func(c Counts) bool {
		n := c.Requests()
		return n > 0 && n >= minRequests && float64(c.Failures) >= ratio*float64(n)
	}
}

// AnyOf trips when any of the conditions does.
func AnyOf(conds ...func(Counts) bool) func(Counts) bool {
	return func(c Counts) bool {
		for _, cond := range conds {
			if cond(c) {
				return true
			}
		}
		return false
	}
}

// State returns the current state.
func (b *Breaker) State() State {
	b.mu.Lock()
	notify := b.tick(time.Now())
	st := b.state
	b.mu.Unlock()
	notify()
	return st
}

// tick moves Open to HalfOpen once the cooldown is over. It must be called
// with mu held and returns the callback to run after unlocking.
func (b *Breaker) tick(now time.Time) func() {
	switch {
	case b.state == StateOpen && !now.Before(b.openUntil):
		notify := b.setState(StateHalfOpen)
		if b.s.Shared != nil {
			// Only one instance of the fleet may probe. The claim is a
			// round trip; holding the lock keeps every local caller waiting
			// for its answer, which is what they must do anyway.
			b.remote, b.claimedAt = !b.s.Shared.ClaimProbe(), now
		}
		return notify
	case b.state == StateHalfOpen && b.remote && now.Sub(b.claimedAt) >= b.s.Cooldown:
		// Another instance probes, and has not told the fleet the outcome
		// for a while: it may have died. Ask again; the shared state
		// decides whether its probe has gone silent long enough.
		b.remote, b.claimedAt = !b.s.Shared.ClaimProbe(), now
	}
	return func() {}
}

// setState changes state with mu held and returns the notification to run
// after unlocking.
func (b *Breaker) setState(to State) func() {
	from := b.state
	if from == to {
		return func() {}
	}
	b.state = to
	b.generation++
	b.probe = false
	b.remote = false
	b.leased = time.Time{}
	switch to {
	case StateOpen:
		b.trips++
		cool := float64(b.s.Cooldown) * math.Pow(2, float64(b.trips-1))
		b.openUntil = time.Now().Add(time.Duration(min(cool, float64(b.s.MaxCooldown))))
	case StateClosed:
		b.trips = 0
		b.counts = Counts{}
		b.countsEnd = time.Now().Add(b.s.Interval)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	listeners := b.listeners
	return func() {
		if b.s.OnStateChange != nil {
			b.s.OnStateChange(b.s.Name, from, to)
		}
		for _, f := range listeners {
			f(b.s.Name, from, to)
		}
	}
}

// Listen adds f to what is told of every state change, after
// OnStateChange, outside the breaker's lock.
func (b *Breaker) Listen(f func(name string, from, to State)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.listeners = append(b.listeners[:len(b.listeners):len(b.listeners)], f)
}

// MaxCooldown is the longest the breaker stays open.
func (b *Breaker) MaxCooldown() time.Duration { return b.s.MaxCooldown }

// Name is the breaker's name (its subscription).
func (b *Breaker) Name() string { return b.s.Name }

// wait returns a channel closed at the next state change, and a timer
// channel for the end of the cooldown when open (nil otherwise).
func (b *Breaker) wait() (<-chan struct{}, time.Duration) {
	switch {
	case b.state == StateOpen:
		return b.changed, time.Until(b.openUntil)
	case b.state == StateHalfOpen && b.remote:
		return b.changed, time.Until(b.claimedAt.Add(b.s.Cooldown))
	case b.state == StateHalfOpen && !b.probe && !b.leased.IsZero():
		return b.changed, time.Until(b.leased.Add(b.s.ProbeLease))
	}
	return b.changed, -1
}

func sleepOrChange(ctx context.Context, changed <-chan struct{}, d time.Duration) error {
	var timer <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-changed:
	case <-timer:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// TryAcquire reports at once whether a task may run now: when closed, or
// when half-open and no probe runs (the task becomes the probe; probe
// says so). Otherwise it returns false and the task should be handed back
// to the stream, where a healthy process can take it. When true, report
// the task's outcome with the returned function (exactly once).
func (b *Breaker) TryAcquire() (report func(Outcome), probe bool, ok bool) {
	b.mu.Lock()
	notify := b.tick(time.Now())
	report, probe, ok = b.acquireLocked()
	b.mu.Unlock()
	notify()
	return report, probe, ok
}

// acquireLocked lets a task run if one may now (see TryAcquire); b.mu must
// be held.
func (b *Breaker) acquireLocked() (report func(Outcome), probe bool, ok bool) {
	switch {
	case b.state == StateClosed:
		return b.reporter(b.generation, false), false, true
	case b.state == StateHalfOpen && !b.probe && !b.remote:
		b.probe, b.leased = true, time.Time{}
		return b.reporter(b.generation, true), true, true
	}
	return nil, false, false
}

// Acquire blocks until a task may run: at once when closed; when open,
// until the cooldown ends and this task becomes the half-open probe; when
// half-open, until the probe's outcome is known. It returns the function to
// report the task's outcome with (call it exactly once), or ctx's error.
func (b *Breaker) Acquire(ctx context.Context) (func(Outcome), error) {
	for {
		b.mu.Lock()
		notify := b.tick(time.Now())
		if report, _, ok := b.acquireLocked(); ok {
			b.mu.Unlock()
			notify()
			return report, nil
		}
		changed, d := b.wait()
		b.mu.Unlock()
		notify()
		if err := sleepOrChange(ctx, changed, d); err != nil {
			return nil, err
		}
	}
}

func (b *Breaker) reporter(gen uint64, probe bool) func(Outcome) {
	var once sync.Once
	return func(o Outcome) { once.Do(func() { b.report(gen, probe, o) }) }
}

func (b *Breaker) report(gen uint64, probe bool, o Outcome) {
	b.mu.Lock()
	notify := func() {}
	if gen == b.generation {
		switch {
		case probe && o == OutcomeSuccess:
			if b.s.Shared != nil {
				// Tell the fleet before anyone here runs again: every task
				// that runs after the probe then runs after the close.
				b.s.Shared.Close()
			}
			notify = b.setState(StateClosed)
		case probe && o == OutcomeFailure:
			notify = b.setState(StateOpen)
			notify = b.publishTrip(notify)
		case probe: // ignored: let another task probe
			b.probe, b.leased = false, time.Time{}
			close(b.changed)
			b.changed = make(chan struct{})
		case o == OutcomeSuccess:
			b.clearExpiredCounts(time.Now())
			b.counts.Successes++
			b.counts.ConsecutiveFailures = 0
		case o == OutcomeFailure:
			b.clearExpiredCounts(time.Now())
			b.counts.Failures++
			b.counts.ConsecutiveFailures++
			if b.s.ReadyToTrip(b.counts) {
				notify = b.setState(StateOpen)
				notify = b.publishTrip(notify)
			}
		}
	}
	b.mu.Unlock()
	notify()
}

// clearExpiredCounts starts a new Interval when the last one is over. It
// must be called with mu held.
func (b *Breaker) clearExpiredCounts(now time.Time) {
	if b.s.Interval <= 0 || now.Before(b.countsEnd) {
		return
	}
	b.counts.Successes, b.counts.Failures = 0, 0
	b.countsEnd = now.Add(b.s.Interval)
}

// Allowance blocks while nothing may be pulled (open, or a probe pulled or
// running) and returns how many messages may be pulled now: unlimited
// (MaxInt) when closed; 1 when half-open, once, so that exactly one task
// is pulled for the probe. Should that pull bring nothing, another is
// allowed after ProbeLease.
func (b *Breaker) Allowance(ctx context.Context) (int, error) {
	for {
		b.mu.Lock()
		notify := b.tick(time.Now())
		switch {
		case b.state == StateClosed:
			b.mu.Unlock()
			notify()
			return math.MaxInt, nil
		case b.state == StateHalfOpen && !b.probe && !b.remote && (b.leased.IsZero() || time.Since(b.leased) >= b.s.ProbeLease):
			b.leased = time.Now()
			b.mu.Unlock()
			notify()
			return 1, nil
		}
		changed, d := b.wait()
		b.mu.Unlock()
		notify()
		if err := sleepOrChange(ctx, changed, d); err != nil {
			return 0, err
		}
	}
}

// publish runs f on the shared state after notify, outside the lock.
func (b *Breaker) publish(notify func(), f func(Shared)) func() {
	if b.s.Shared == nil {
		return notify
	}
	sh := b.s.Shared
	return func() { notify(); f(sh) }
}

// publishTrip publishes a local trip; mu must be held.
func (b *Breaker) publishTrip(notify func()) func() {
	until, trips := b.openUntil, b.trips
	return b.publish(notify, func(sh Shared) { sh.Trip(until, trips) })
}

// Apply takes a change made by another instance of the fleet: open until
// the given time (trips so far), or closed. It does not publish it again.
//
// The change comes from shared state that may have been written by anyone
// with access to it, so it is bounded: the breaker stays open at most
// MaxCooldown from now, whatever until says.
func (b *Breaker) Apply(open bool, until time.Time, trips int) {
	if latest := time.Now().Add(b.s.MaxCooldown); until.After(latest) {
		until = latest
	}
	b.mu.Lock()
	notify := func() {}
	switch {
	case open && !(b.state == StateOpen && b.openUntil.Equal(until)):
		if b.state != StateOpen {
			notify = b.setState(StateOpen)
		}
		b.openUntil, b.trips = until, max(trips, b.trips)
		close(b.changed) // waiters re-read the cooldown
		b.changed = make(chan struct{})
	case !open && b.state != StateClosed:
		notify = b.setState(StateClosed)
	}
	b.mu.Unlock()
	notify()
}
