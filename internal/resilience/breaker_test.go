package resilience

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type transitions struct {
	mu  sync.Mutex
	log []string
}

func (tr *transitions) record(_ string, from, to State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.log = append(tr.log, fmt.Sprintf("%v->%v", from, to))
}

func (tr *transitions) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return fmt.Sprint(tr.log)
}

func fail(t *testing.T, b *Breaker, o Outcome) {
	t.Helper()
	done, err := b.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(o)
}

func TestBreakerTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &transitions{}
		b := NewBreaker(BreakerSettings{Name: "s", Cooldown: 10 * time.Second, MaxCooldown: 25 * time.Second, OnStateChange: tr.record})

		// A success resets the count; permanent errors do not count.
		for range 4 {
			fail(t, b, OutcomeFailure)
		}
		fail(t, b, OutcomeSuccess)
		for range 4 {
			fail(t, b, OutcomeFailure)
		}
		fail(t, b, OutcomeIgnored)
		if b.State() != StateClosed {
			t.Fatal("opened before 5 consecutive failures")
		}
		fail(t, b, OutcomeFailure) // 5th consecutive
		if b.State() != StateOpen {
			t.Fatal("not open after 5 consecutive failures")
		}

		// Open: Allowance and Acquire block until the cooldown ends.
		ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
		if _, err := b.Allowance(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("allowance while open: %v", err)
		}
		cancel()
		start := time.Now()
		n, err := b.Allowance(context.Background())
		if err != nil || n != 1 || time.Since(start) != time.Second {
			t.Fatalf("half-open allowance %d after %v: %v", n, time.Since(start), err)
		}
		if b.State() != StateHalfOpen {
			t.Fatal("not half-open after cooldown")
		}

		// Half-open: one probe; others wait; a failed probe reopens with a doubled cooldown.
		probe, _ := b.Acquire(context.Background())
		second := make(chan time.Time)
		go func() {
			done, err := b.Acquire(context.Background())
			if err == nil {
				second <- time.Now()
				done(OutcomeSuccess)
			}
		}()
		synctest.Wait()
		if n, _ := allowanceNow(b); n != 0 {
			t.Fatal("pulling allowed while the probe runs")
		}
		reopened := time.Now()
		probe(OutcomeFailure)
		if b.State() != StateOpen {
			t.Fatal("failed probe did not reopen")
		}
		got := <-second // the waiter becomes the next probe after 20s and succeeds
		if d := got.Sub(reopened); d != 20*time.Second {
			t.Fatalf("second cooldown %v, want 20s (doubled)", d)
		}
		synctest.Wait()
		if b.State() != StateClosed {
			t.Fatalf("successful probe did not close: %v", b.State())
		}
		if n, _ := allowanceNow(b); n != math.MaxInt {
			t.Fatalf("closed allowance %d", n)
		}
		want := "[closed->open open->half-open half-open->open open->half-open half-open->closed]"
		if tr.String() != want {
			t.Fatalf("transitions %s, want %s", tr, want)
		}
	})
}

func allowanceNow(b *Breaker) (int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return b.Allowance(ctx)
}

func TestBreakerCooldownCapAndReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: 10 * time.Second, MaxCooldown: 25 * time.Second})
		cooldowns := []time.Duration{}
		fail(t, b, OutcomeFailure)
		for range 3 {
			start := time.Now()
			probe, _ := b.Acquire(context.Background())
			cooldowns = append(cooldowns, time.Since(start))
			probe(OutcomeFailure)
		}
		if fmt.Sprint(cooldowns) != "[10s 20s 25s]" {
			t.Fatalf("cooldowns %v, want [10s 20s 25s]", cooldowns)
		}
		start := time.Now()
		probe, _ := b.Acquire(context.Background())
		probe(OutcomeSuccess)
		if time.Since(start) != 25*time.Second || b.State() != StateClosed {
			t.Fatal("did not close")
		}
		fail(t, b, OutcomeFailure) // a new trip after closing starts from the base cooldown
		start = time.Now()
		probe, _ = b.Acquire(context.Background())
		if time.Since(start) != 10*time.Second {
			t.Fatalf("cooldown after reset %v, want 10s", time.Since(start))
		}
		probe(OutcomeIgnored) // a permanent error on the probe says nothing: another task probes
		if b.State() != StateHalfOpen {
			t.Fatal("ignored probe changed state")
		}
		next, err := b.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		next(OutcomeSuccess)
		if b.State() != StateClosed {
			t.Fatal("second probe did not close")
		}
	})
}

func TestBreakerFailureRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{
			ReadyToTrip: AnyOf(ConsecutiveFailures(5), FailureRate(0.5, 10)),
			Interval:    time.Minute,
		})
		// Failures alternate with successes: never 5 in a row, but half of
		// the outcomes. Below 10 outcomes the rate does not count yet.
		for i := range 9 {
			fail(t, b, []Outcome{OutcomeFailure, OutcomeSuccess}[i%2])
		}
		fail(t, b, OutcomeIgnored) // a permanent error is not an outcome of the downstream
		if b.State() != StateClosed {
			t.Fatal("opened before min requests")
		}
		fail(t, b, OutcomeSuccess) // 10 outcomes, 5 failures: a rate of exactly 0.5, checked on the next failure
		if b.State() != StateClosed {
			t.Fatal("a success opened the breaker")
		}
		fail(t, b, OutcomeFailure) // 6 of 11
		if b.State() != StateOpen {
			t.Fatalf("closed at 6 failures of 11 with a 0.5 rate")
		}
	})
}

func TestBreakerIntervalClearsRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: FailureRate(0.5, 4), Interval: time.Minute})
		// 3 failures and 9 successes in the first minute: a rate of 0.25.
		for range 9 {
			fail(t, b, OutcomeSuccess)
		}
		for range 3 {
			fail(t, b, OutcomeFailure)
		}
		time.Sleep(time.Minute)
		// In the next interval only the new outcomes count: 2 of 4 fail.
		// Without the clearing, 5 of 16 would keep it closed.
		fail(t, b, OutcomeSuccess)
		fail(t, b, OutcomeSuccess)
		fail(t, b, OutcomeFailure)
		if b.State() != StateClosed {
			t.Fatal("opened below min requests in the new interval")
		}
		fail(t, b, OutcomeFailure)
		if b.State() != StateOpen {
			t.Fatal("did not open at 2 failures of 4 in the new interval")
		}
	})
}

func TestFailureRateConditions(t *testing.T) {
	rate := FailureRate(0.5, 4)
	for _, c := range []struct {
		counts Counts
		want   bool
	}{
		{Counts{}, false},
		{Counts{Failures: 3}, false},              // below min requests
		{Counts{Failures: 4}, true},               // 100%
		{Counts{Successes: 2, Failures: 2}, true}, // exactly the ratio
		{Counts{Successes: 3, Failures: 2}, false},
	} {
		if got := rate(c.counts); got != c.want {
			t.Errorf("FailureRate(0.5, 4)(%+v) = %v", c.counts, got)
		}
	}
	if !FailureRate(0, 0)(Counts{Successes: 1}) || FailureRate(1, 1)(Counts{}) {
		t.Error("edge ratios")
	}
	if AnyOf()(Counts{Failures: 9}) || !AnyOf(ConsecutiveFailures(9), rate)(Counts{Failures: 4}) {
		t.Error("AnyOf")
	}
}

func TestBreakerStaleOutcomesIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(2), Cooldown: time.Second})
		inflight, _ := b.Acquire(context.Background()) // started while closed
		fail(t, b, OutcomeFailure)
		fail(t, b, OutcomeFailure)
		if b.State() != StateOpen {
			t.Fatal("not open")
		}
		inflight(OutcomeSuccess) // finished after the trip: must not close the breaker
		if b.State() != StateOpen {
			t.Fatal("a stale success closed the breaker")
		}
	})
}

// observed records what Observe tells.
type observed struct {
	mu  sync.Mutex
	all []Transition
}

func (o *observed) add(t Transition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, t)
}

func (o *observed) list() []Transition {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Transition(nil), o.all...)
}

// Observe tells each change with its cause: what the breaker did itself
// (its outcomes, its clock) and what it took with Apply, which a layer
// sharing the breaker must not share again.
func TestObserveTellsCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{Name: "s", ReadyToTrip: ConsecutiveFailures(1), Cooldown: 10 * time.Second, MaxCooldown: time.Minute})
		obs := &observed{}
		b.Observe(obs.add)
		start := time.Now()
		fail(t, b, OutcomeFailure)              // own trip
		time.Sleep(10 * time.Second)            // own clock,
		if s := b.State(); s != StateHalfOpen { // seen when looked at
			t.Fatalf("after the cooldown: %v", s)
		}
		b.Apply(true, start.Add(15*time.Second), 3) // applied reopen
		b.Apply(true, start.Add(17*time.Second), 3) // applied extension: no change
		b.Apply(false, time.Time{}, 0)              // applied close
		b.Apply(false, time.Time{}, 0)              // already closed: no change
		want := []Transition{
			{Name: "s", From: StateClosed, To: StateOpen, Until: start.Add(10 * time.Second), Trips: 1},
			{Name: "s", From: StateOpen, To: StateHalfOpen, Trips: 1},
			{Name: "s", From: StateHalfOpen, To: StateOpen, Until: start.Add(15 * time.Second), Trips: 3, Applied: true},
			{Name: "s", From: StateOpen, To: StateClosed, Applied: true},
		}
		got := obs.list()
		if len(got) != len(want) {
			t.Fatalf("told %+v, want %+v", got, want)
		}
		for i := range want {
			if !got[i].Until.Equal(want[i].Until) || got[i].Name != want[i].Name || got[i].From != want[i].From ||
				got[i].To != want[i].To || got[i].Trips != want[i].Trips || got[i].Applied != want[i].Applied {
				t.Errorf("change %d: %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

// Snapshot's generation changes with every state change and only then, so
// that a layer can tell whether a task was let run in the state it saw.
func TestSnapshotGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: time.Second})
		s0 := b.Snapshot()
		fail(t, b, OutcomeFailure)
		s1 := b.Snapshot()
		if s1.State != StateOpen || s1.Generation != s0.Generation+1 || s1.Trips != 1 || !s1.Until.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("after a trip: %+v (before %+v)", s1, s0)
		}
		b.Apply(true, time.Now().Add(2*time.Second), 1) // a longer cooldown is no state change
		if s := b.Snapshot(); s.Generation != s1.Generation || !s.Until.Equal(time.Now().Add(2*time.Second)) {
			t.Fatalf("after an extension: %+v", s)
		}
		time.Sleep(2 * time.Second)
		probe, isProbe, ok := b.TryAcquire()
		s2 := b.Snapshot()
		if !ok || !isProbe || s2.State != StateHalfOpen || s2.Generation != s1.Generation+1 || !s2.Until.IsZero() {
			t.Fatalf("half-open: %+v, probe %v %v", s2, isProbe, ok)
		}
		probe(OutcomeIgnored) // another task may probe: the state is the same
		if s := b.Snapshot(); s.Generation != s2.Generation {
			t.Fatalf("an ignored probe changed the generation: %+v", s)
		}
	})
}

// TryAcquire, Acquire and Allowance apply one rule: in each situation
// they agree on whether a task may start and on how much may be pulled.
func TestOneRule(t *testing.T) {
	type want struct {
		try, probe bool // TryAcquire: ok and probe
		acquire    bool // Acquire without waiting
		pull       int  // Allowance without waiting; 0: it would wait
	}
	for _, c := range []struct {
		name  string
		setup func(b *Breaker) // leaves the breaker in the situation
		want  want
	}{
		{"closed", func(*Breaker) {}, want{try: true, acquire: true, pull: math.MaxInt}},
		{"open", func(b *Breaker) { b.Apply(true, time.Now().Add(time.Hour), 1) }, want{}},
		{"half-open", func(b *Breaker) { b.Apply(true, time.Now(), 1); b.State() }, want{try: true, probe: true, acquire: true, pull: 1}},
		{"half-open, probe pulled", func(b *Breaker) { b.Apply(true, time.Now(), 1); _, _ = b.Allowance(context.Background()) },
			want{try: true, probe: true, acquire: true}},
		{"half-open, probe running", func(b *Breaker) { b.Apply(true, time.Now(), 1); _, _, _ = b.TryAcquire() }, want{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fresh := func() *Breaker {
					b := NewBreaker(BreakerSettings{Cooldown: time.Second})
					c.setup(b)
					return b
				}
				var got want
				_, got.probe, got.try = fresh().TryAcquire()
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				b := fresh()
				_, err := b.Acquire(ctx)
				got.acquire = err == nil
				got.pull, _ = allowanceNow(fresh())
				if got != c.want {
					t.Fatalf("got %+v, want %+v", got, c.want)
				}
			})
		})
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []State{StateClosed, StateOpen, StateHalfOpen} {
		text, err := s.MarshalText()
		if err != nil || string(text) != s.String() {
			t.Fatalf("MarshalText(%v) = %q, %v", s, text, err)
		}
		var back State = -1
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Fatalf("UnmarshalText(%q) = %v, %v", text, back, err)
		}
	}
	if _, err := State(7).MarshalText(); err == nil {
		t.Fatal("an unknown state was marshalled")
	}
	for _, bad := range []string{"", "opened-forever", "OPEN", "open ", "closed\x00", strings.Repeat("x", 1<<20)} {
		s := StateOpen
		err := s.UnmarshalText([]byte(bad))
		if err == nil || s != StateOpen {
			t.Fatalf("UnmarshalText(%.20q) = %v, %v; want an error and no change", bad, s, err)
		}
		if len(err.Error()) > 200 {
			t.Fatalf("the error quotes all of a long input: %d bytes", len(err.Error()))
		}
	}
	// JSON as the fleet's shared entry has it.
	var v struct{ State State }
	if err := json.Unmarshal([]byte(`{"State":"half-open"}`), &v); err != nil || v.State != StateHalfOpen {
		t.Fatalf("json: %v %v", v.State, err)
	}
	if err := json.Unmarshal([]byte(`{"State":"ajar"}`), &v); err == nil {
		t.Fatal("json took an unknown state")
	}
	if b, err := json.Marshal(struct{ S State }{StateOpen}); err != nil || string(b) != `{"S":"open"}` {
		t.Fatalf("json: %s %v", b, err)
	}
}

// A remote open that names a far future (a hand-written shared entry) keeps
// the breaker open no longer than MaxCooldown.
func TestApplyBoundsRemoteOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second})
		b.Apply(true, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), 1)
		if b.State() != StateOpen {
			t.Fatal("not open")
		}
		time.Sleep(10*time.Second + time.Millisecond)
		if s := b.State(); s != StateHalfOpen {
			t.Fatalf("after MaxCooldown: %v, want half-open", s)
		}
	})
}

// Half-open lets exactly one task be pulled and run as the probe: the
// next pull waits for its outcome (or for the lease, should the pull have
// found nothing), and a task that arrives meanwhile does not run.
func TestHalfOpenOneProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: time.Second, ProbeLease: 3 * time.Second})
		report, _, _ := b.TryAcquire()
		report(OutcomeFailure)
		if _, _, ok := b.TryAcquire(); ok {
			t.Fatal("a task may start while the breaker is open")
		}
		time.Sleep(time.Second)
		if n, err := b.Allowance(context.Background()); n != 1 || err != nil {
			t.Fatalf("half-open allowance %d, %v; want 1", n, err)
		}
		second := make(chan int, 1)
		go func() { n, _ := b.Allowance(context.Background()); second <- n }()
		synctest.Wait()
		if len(second) != 0 {
			t.Fatal("a second pull was allowed while the probe's pull is out")
		}
		// The pull found nothing: after the lease another may be pulled.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if n := <-second; n != 1 {
			t.Fatalf("after the lease: allowance %d, want 1", n)
		}
		probe, isProbe, ok := b.TryAcquire()
		if !ok || !isProbe {
			t.Fatal("the pulled task did not become the probe")
		}
		if _, _, ok := b.TryAcquire(); ok {
			t.Fatal("a second task may run while the probe runs")
		}
		third := make(chan int, 1)
		go func() { n, _ := b.Allowance(context.Background()); third <- n }()
		time.Sleep(time.Hour) // the probe runs long: no lease ends a running probe
		synctest.Wait()
		if len(third) != 0 {
			t.Fatal("a pull was allowed while the probe runs")
		}
		probe(OutcomeSuccess)
		synctest.Wait()
		if n := <-third; n != math.MaxInt || b.State() != StateClosed {
			t.Fatalf("after the probe succeeded: allowance %d, state %v", n, b.State())
		}
	})
}

// An open period already over, applied late (a shared entry delivered
// after its cooldown), leaves a half-open breaker and its probe alone; a
// closed breaker takes it, so that it probes before running freely.
func TestApplyPastOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: time.Second})
		tripped := time.Now()
		fail(t, b, OutcomeFailure)
		time.Sleep(time.Second)
		probe, isProbe, ok := b.TryAcquire()
		if !ok || !isProbe {
			t.Fatal("no probe after the cooldown")
		}
		before := b.Snapshot()
		b.Apply(true, tripped.Add(time.Second), 1) // the trip itself, late
		if after := b.Snapshot(); after != before {
			t.Fatalf("a past open changed the half-open breaker: %+v -> %+v", before, after)
		}
		probe(OutcomeSuccess)
		if s := b.State(); s != StateClosed {
			t.Fatalf("the probe's success left %v", s)
		}
		b.Apply(true, time.Now().Add(-time.Second), 1)
		if s := b.State(); s != StateHalfOpen {
			t.Fatalf("a closed breaker given a past open: %v, want half-open", s)
		}
	})
}

// blockedFor reports whether nothing may be pulled or started for d:
// TryAcquire refuses and Allowance waits the whole time.
func blockedFor(b *Breaker, d time.Duration) bool {
	if _, _, ok := b.TryAcquire(); ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := b.Allowance(ctx)
	return errors.Is(err, context.DeadlineExceeded)
}

// A forced open holds until its time whatever else happens: no probe
// runs before then, outcomes of tasks started earlier and changes applied
// from the fleet change nothing; then the breaker probes as after any
// open. It is no trip: the next trip's cooldown does not grow with it.
func TestForceOpenHoldsUntilItsTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{Name: "s", ReadyToTrip: ConsecutiveFailures(1), Cooldown: 10 * time.Second, MaxCooldown: time.Minute})
		obs := &observed{}
		b.Observe(obs.add)
		inflight, _ := b.Acquire(context.Background()) // started while closed
		start := time.Now()
		until := start.Add(time.Hour)
		b.ForceOpen(until)
		if s := b.Snapshot(); s.State != StateOpen || !s.Forced || !s.Until.Equal(until) || s.Trips != 0 {
			t.Fatalf("after ForceOpen: %+v", s)
		}
		inflight(OutcomeSuccess)       // stale: closes nothing
		b.Apply(false, time.Time{}, 0) // the fleet's close
		b.Apply(true, start.Add(time.Second), 1)
		if s := b.Snapshot(); s.State != StateOpen || !s.Forced || !s.Until.Equal(until) {
			t.Fatalf("an outcome or Apply changed a forced open: %+v", s)
		}
		if !blockedFor(b, time.Hour-time.Millisecond) {
			t.Fatal("a task was let pull or start before the forced open ended")
		}
		time.Sleep(time.Millisecond)
		if s := b.Snapshot(); s.State != StateHalfOpen || s.Forced {
			t.Fatalf("after the forced open: %+v, want half-open", s)
		}
		probe, isProbe, ok := b.TryAcquire()
		if !ok || !isProbe {
			t.Fatal("no probe after the forced open")
		}
		probe(OutcomeFailure)
		if s := b.Snapshot(); s.State != StateOpen || s.Trips != 1 || !s.Until.Equal(time.Now().Add(10*time.Second)) {
			t.Fatalf("a failed probe after a forced open: %+v, want the first trip's cooldown", s)
		}
		got := obs.list()
		if len(got) != 3 || !got[0].Manual || !got[0].Applied || got[0].To != StateOpen || !got[0].Until.Equal(until) ||
			got[1].Manual || got[1].Applied || got[1].To != StateHalfOpen || got[2].Manual || got[2].To != StateOpen {
			t.Fatalf("told %+v", got)
		}
	})
}

// A forced open is bounded to MaxForcedOpen; one not in the future
// changes nothing; one given to an open breaker replaces its period,
// longer or shorter, without telling a change.
func TestForceOpenBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: 10 * time.Second})
		obs := &observed{}
		b.Observe(obs.add)
		b.ForceOpen(time.Now())
		b.ForceOpen(time.Now().Add(-time.Hour))
		if s := b.Snapshot(); s.State != StateClosed || s.Generation != 0 || len(obs.list()) != 0 {
			t.Fatalf("a forced open that is over changed the breaker: %+v", s)
		}
		b.ForceOpen(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
		if s := b.Snapshot(); !s.Until.Equal(time.Now().Add(MaxForcedOpen)) {
			t.Fatalf("year 9999: open until %v, want %v", s.Until, time.Now().Add(MaxForcedOpen))
		}
		time.Sleep(MaxForcedOpen)
		if s := b.State(); s != StateHalfOpen {
			t.Fatalf("after MaxForcedOpen: %v", s)
		}

		b.Reset()
		fail(t, b, OutcomeFailure) // a trip: open for 10s
		told := len(obs.list())
		b.ForceOpen(time.Now().Add(time.Minute)) // longer
		if s := b.Snapshot(); !s.Forced || !s.Until.Equal(time.Now().Add(time.Minute)) || s.Trips != 1 {
			t.Fatalf("a forced open of an open breaker: %+v", s)
		}
		b.ForceOpen(time.Now().Add(time.Second)) // shorter: the operator's word
		if s := b.Snapshot(); !s.Until.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("a shorter forced open: %+v", s)
		}
		if n := len(obs.list()); n != told {
			t.Fatalf("a forced open of an open breaker told %d changes", n-told)
		}
		time.Sleep(time.Second)
		if s := b.State(); s != StateHalfOpen {
			t.Fatalf("after the shorter forced open: %v", s)
		}
	})
}

// Reset closes at once from any state: a forced open, a cooldown, a
// running probe (whose outcome is then ignored); the waiters pull again,
// and the counts start from zero.
func TestReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(3), Cooldown: 10 * time.Second})
		obs := &observed{}
		b.Observe(obs.add)

		b.ForceOpen(time.Now().Add(time.Hour))
		pulled := make(chan int, 1)
		go func() { n, _ := b.Allowance(context.Background()); pulled <- n }()
		synctest.Wait()
		if len(pulled) != 0 {
			t.Fatal("pulled while forced open")
		}
		b.Reset()
		synctest.Wait()
		if n := <-pulled; n != math.MaxInt || b.State() != StateClosed {
			t.Fatalf("after Reset: allowance %d, state %v", n, b.State())
		}
		if got := obs.list(); len(got) != 2 || !got[1].Manual || !got[1].Applied || got[1].To != StateClosed {
			t.Fatalf("told %+v", got)
		}

		// A probe running: Reset closes, and the probe's failure is stale.
		for range 3 {
			fail(t, b, OutcomeFailure)
		}
		time.Sleep(10 * time.Second)
		probe, isProbe, ok := b.TryAcquire()
		if !ok || !isProbe {
			t.Fatal("no probe")
		}
		b.Reset()
		probe(OutcomeFailure)
		if s := b.Snapshot(); s.State != StateClosed || s.Trips != 0 {
			t.Fatalf("a probe's failure after Reset: %+v", s)
		}

		// Closed already: no change told, but the counts start again.
		fail(t, b, OutcomeFailure)
		fail(t, b, OutcomeFailure)
		told := len(obs.list())
		b.Reset()
		fail(t, b, OutcomeFailure)
		fail(t, b, OutcomeFailure)
		if s := b.State(); s != StateClosed || len(obs.list()) != told {
			t.Fatalf("Reset of a closed breaker: %v, %d changes told", s, len(obs.list())-told)
		}
		fail(t, b, OutcomeFailure)
		if s := b.State(); s != StateOpen {
			t.Fatalf("three failures after the Reset: %v", s)
		}
	})
}
