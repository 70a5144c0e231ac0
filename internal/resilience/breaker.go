package resilience

import (
	"context"
	"fmt"
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

// MarshalText writes the state as String does; a state that is none of
// the three is an error.
func (s State) MarshalText() ([]byte, error) {
	if s < StateClosed || s > StateHalfOpen {
		return nil, fmt.Errorf("resilience: no breaker state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads "closed", "open" or "half-open"; anything else is
// an error and leaves s unchanged.
func (s *State) UnmarshalText(text []byte) error {
	for _, st := range []State{StateClosed, StateOpen, StateHalfOpen} {
		if string(text) == st.String() {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("resilience: unknown breaker state %q (want closed, open or half-open)", clipText(text))
}

// clipText keeps an unknown state short enough for an error message.
func clipText(text []byte) string {
	const maxLen = 64
	if len(text) > maxLen {
		return string(text[:maxLen]) + "..."
	}
	return string(text)
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
}

// Transition is one state change of a Breaker, as Observe tells it.
type Transition struct {
	// Name is the breaker's name.
	Name string
	// From and To are the states before and after.
	From, To State
	// Until is when the cooldown ends, when To is StateOpen.
	Until time.Time
	// Trips counts the trips since the breaker last closed.
	Trips int
	// Applied says the change was taken from outside with Apply, not made
	// by the breaker's own outcomes or clock. Whatever shares the
	// breaker's changes with others shares only those not Applied.
	Applied bool
	// Manual says the change was made by hand, with ForceOpen or Reset
	// (an operator's command). Such a change is Applied too.
	Manual bool
}

// Snapshot is a breaker's state at one moment.
type Snapshot struct {
	State State
	// Until is when the cooldown ends, when State is StateOpen.
	Until time.Time
	// Trips counts the trips since the breaker last closed.
	Trips int
	// Generation counts the state changes: two snapshots with the same
	// Generation saw no change between them.
	Generation uint64
	// Forced says the breaker is open by hand (ForceOpen) until Until.
	Forced bool
}

// Breaker is a circuit breaker shared by the workers of one subscription
// in one process. Workers call TryAcquire (or Acquire) before running a
// task and report its Outcome; the pull loop calls Allowance before
// pulling, so an open breaker pauses the subscription. It knows nothing of
// other processes: a layer that shares its state (see package fleet)
// observes its transitions and gives it the others' with Apply.
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
	forced     bool      // open by hand (ForceOpen) until openUntil
	generation uint64    // bumped on every state change; stale outcomes are ignored
	changed    chan struct{}
	observers  []func(Transition)
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
func (b *Breaker) State() State { return b.Snapshot().State }

// Snapshot returns the current state with its cooldown, trips and generation.
func (b *Breaker) Snapshot() Snapshot {
	b.mu.Lock()
	notify := b.tick(time.Now())
	snap := Snapshot{State: b.state, Trips: b.trips, Generation: b.generation, Forced: b.forced}
	if b.state == StateOpen {
		snap.Until = b.openUntil
	}
	b.mu.Unlock()
	notify()
	return snap
}

// tick moves Open to HalfOpen once the cooldown is over. It must be called
// with mu held and returns the callback to run after unlocking.
func (b *Breaker) tick(now time.Time) func() {
	if b.state == StateOpen && !now.Before(b.openUntil) {
		return b.setState(StateHalfOpen, nil)
	}
	return func() {}
}

// setState changes state with mu held and returns the notification to run
// after unlocking. ext is nil for the breaker's own changes, and set for
// one taken with Apply.
func (b *Breaker) setState(to State, ext *external) func() {
	from := b.state
	if from == to {
		return func() {}
	}
	b.state = to
	b.generation++
	b.probe = false
	b.leased = time.Time{}
	manual := ext != nil && ext.manual
	b.forced = manual && to == StateOpen
	switch to {
	case StateOpen:
		if manual { // an operator's open is no trip
			b.openUntil = ext.until
			break
		}
		b.trips++
		cool := float64(b.s.Cooldown) * math.Pow(2, float64(b.trips-1))
		b.openUntil = time.Now().Add(time.Duration(min(cool, float64(b.s.MaxCooldown))))
		if ext != nil {
			b.openUntil, b.trips = ext.until, max(ext.trips, b.trips)
		}
	case StateClosed:
		b.trips = 0
		b.counts = Counts{}
		b.countsEnd = time.Now().Add(b.s.Interval)
	}
	b.wake()
	t := Transition{Name: b.s.Name, From: from, To: to, Trips: b.trips, Applied: ext != nil, Manual: manual}
	if to == StateOpen {
		t.Until = b.openUntil
	}
	observers := b.observers
	return func() {
		if b.s.OnStateChange != nil {
			b.s.OnStateChange(b.s.Name, from, to)
		}
		for _, f := range observers {
			f(t)
		}
	}
}

// external is a change taken with Apply (or made by hand, manual): when
// it opens, the open period and trips it names.
type external struct {
	until  time.Time
	trips  int
	manual bool
}

// wake tells the waiters (Acquire, Allowance) to look again; mu must be held.
func (b *Breaker) wake() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Listen adds f to what is told of every state change, after
// OnStateChange, outside the breaker's lock.
func (b *Breaker) Listen(f func(name string, from, to State)) {
	b.Observe(func(t Transition) { f(t.Name, t.From, t.To) })
}

// Observe adds f to what is told of every state change, with its cooldown
// and cause, after OnStateChange, outside the breaker's lock, in the order
// the observers (and listeners) were added. A change is told in the
// goroutine that made it, before the call that made it returns.
func (b *Breaker) Observe(f func(Transition)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.observers = append(b.observers[:len(b.observers):len(b.observers)], f)
}

// MaxCooldown is the longest the breaker stays open.
func (b *Breaker) MaxCooldown() time.Duration { return b.s.MaxCooldown }

// Name is the breaker's name (its subscription).
func (b *Breaker) Name() string { return b.s.Name }

// admission is what the breaker lets through at one moment. It is the one
// rule that TryAcquire, Acquire and Allowance apply.
type admission struct {
	run  bool // a task may start now: as the probe when half-open
	pull int  // how many messages may be pulled now; 0: none
	// wait is, when nothing may be pulled, how long until that can change
	// without a state change or a probe's outcome; -1: only those change it.
	wait time.Duration
}

// admit applies the rule; mu must be held and tick already run.
//
//	closed:                     run; pull any number
//	open:                       nothing until the cooldown ends
//	half-open, probe running:   nothing until its outcome
//	half-open, probe's pull out: run (the pulled task is the probe); no pull until the lease ends
//	half-open, no probe:        run as the probe; pull 1
func (b *Breaker) admit(now time.Time) admission {
	switch {
	case b.state == StateClosed:
		return admission{run: true, pull: math.MaxInt}
	case b.state == StateOpen:
		return admission{wait: b.openUntil.Sub(now)}
	case b.probe:
		return admission{wait: -1}
	case !b.leased.IsZero() && now.Sub(b.leased) < b.s.ProbeLease:
		return admission{run: true, wait: b.leased.Add(b.s.ProbeLease).Sub(now)}
	}
	return admission{run: true, pull: 1}
}

// start lets a task run, which admit allowed; mu must be held.
func (b *Breaker) start() (report func(Outcome), probe bool) {
	if b.state == StateHalfOpen {
		b.probe, b.leased = true, time.Time{}
		return b.reporter(b.generation, true), true
	}
	return b.reporter(b.generation, false), false
}

// look ticks and applies the rule; mu must be held. It returns the
// notification of the tick to run after unlocking.
func (b *Breaker) look() (admission, func()) {
	now := time.Now()
	notify := b.tick(now)
	return b.admit(now), notify
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
	a, notify := b.look()
	if a.run {
		report, probe = b.start()
	}
	b.mu.Unlock()
	notify()
	return report, probe, a.run
}

// Acquire blocks until a task may run: at once when closed; when open,
// until the cooldown ends and this task becomes the half-open probe; when
// half-open, until the probe's outcome is known. It returns the function to
// report the task's outcome with (call it exactly once), or ctx's error.
func (b *Breaker) Acquire(ctx context.Context) (func(Outcome), error) {
	for {
		b.mu.Lock()
		a, notify := b.look()
		if a.run {
			report, _ := b.start()
			b.mu.Unlock()
			notify()
			return report, nil
		}
		changed := b.changed
		b.mu.Unlock()
		notify()
		if err := sleepOrChange(ctx, changed, a.wait); err != nil {
			return nil, err
		}
	}
}

// Allowance blocks while nothing may be pulled (open, or a probe pulled or
// running) and returns how many messages may be pulled now: unlimited
// (MaxInt) when closed; 1 when half-open, once, so that exactly one task
// is pulled for the probe. Should that pull bring nothing, another is
// allowed after ProbeLease.
func (b *Breaker) Allowance(ctx context.Context) (int, error) {
	for {
		b.mu.Lock()
		a, notify := b.look()
		if a.pull > 0 {
			if b.state == StateHalfOpen {
				b.leased = time.Now()
			}
			b.mu.Unlock()
			notify()
			return a.pull, nil
		}
		changed := b.changed
		b.mu.Unlock()
		notify()
		if err := sleepOrChange(ctx, changed, a.wait); err != nil {
			return 0, err
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
			notify = b.setState(StateClosed, nil)
		case probe && o == OutcomeFailure:
			notify = b.setState(StateOpen, nil)
		case probe: // ignored: let another task probe
			b.probe, b.leased = false, time.Time{}
			b.wake()
		case o == OutcomeSuccess:
			b.clearExpiredCounts(time.Now())
			b.counts.Successes++
			b.counts.ConsecutiveFailures = 0
		case o == OutcomeFailure:
			b.clearExpiredCounts(time.Now())
			b.counts.Failures++
			b.counts.ConsecutiveFailures++
			if b.s.ReadyToTrip(b.counts) {
				notify = b.setState(StateOpen, nil)
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

// Apply takes a change made elsewhere (by another process sharing the
// breaker): open until the given time (trips so far), or closed. The
// observers are told it as Applied.
//
// The change comes from shared state that may have been written by anyone
// with access to it, so it is bounded: the breaker stays open at most
// MaxCooldown from now, whatever until says. An open period that is
// already over changes nothing in a half-open breaker, which is past it
// (its probe goes on). A breaker open by hand (ForceOpen) takes nothing
// from outside until its forced open ends.
func (b *Breaker) Apply(open bool, until time.Time, trips int) {
	now := time.Now()
	if latest := now.Add(b.s.MaxCooldown); until.After(latest) {
		until = latest
	}
	b.mu.Lock()
	notify := func() {}
	switch {
	case b.forced && now.Before(b.openUntil):
	case open && b.state == StateHalfOpen && !until.After(now):
	case open && b.state != StateOpen:
		notify = b.setState(StateOpen, &external{until: until, trips: trips})
	case open && !b.openUntil.Equal(until):
		b.openUntil, b.trips, b.forced = until, max(trips, b.trips), false
		b.wake() // waiters re-read the cooldown
	case !open && b.state != StateClosed:
		notify = b.setState(StateClosed, &external{})
	}
	b.mu.Unlock()
	notify()
}

// MaxForcedOpen bounds how long ForceOpen keeps a breaker open.
const MaxForcedOpen = 24 * time.Hour

// ForceOpen opens the breaker by hand (an operator's maintenance) until
// the given time, at most MaxForcedOpen from now: nothing is pulled and
// no task starts before then, whatever the cooldown, the outcomes of tasks
// started earlier or Apply say. At until it goes half-open and probes, as
// after any open. It is not a trip: the cooldown of the next trip does
// not grow with it. Only until's passing, Reset or another ForceOpen end
// it. An until that is not in the future changes nothing.
//
// Observers are told the change as Applied and Manual. A breaker that is
// open already stays open, now until the given time, and tells no change.
func (b *Breaker) ForceOpen(until time.Time) {
	now := time.Now()
	if !until.After(now) {
		return
	}
	if latest := now.Add(MaxForcedOpen); until.After(latest) {
		until = latest
	}
	b.mu.Lock()
	notify := func() {}
	if b.state == StateOpen {
		b.openUntil, b.forced = until, true
		b.wake() // waiters re-read the open period
	} else {
		notify = b.setState(StateOpen, &external{until: until, manual: true})
	}
	b.mu.Unlock()
	notify()
}

// Reset closes the breaker at once (an operator's command), ending an
// open period, forced or not, and a half-open probe, whose outcome is then
// ignored; the counts and trips start again from zero. Observers are told
// the change as Applied and Manual.
func (b *Breaker) Reset() {
	b.mu.Lock()
	notify := b.setState(StateClosed, &external{manual: true})
	// Closed already: only the counts start again.
	b.counts = Counts{}
	b.countsEnd = time.Now().Add(b.s.Interval)
	b.mu.Unlock()
	notify()
}
