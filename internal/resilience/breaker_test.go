package resilience

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// fleet is an in-memory Shared for several breakers: what one publishes,
// the others Apply, as the JetStream Key-Value watcher does for real.
type fleet struct {
	mu       sync.Mutex
	members  []*Breaker
	probing  bool
	claims   int
	openTill time.Time
	claimed  time.Time
	timeout  time.Duration // a probe silent this long may be claimed again; 0: never
}

type member struct {
	f    *fleet
	self int
}

func (m member) Trip(until time.Time, trips int) {
	m.f.mu.Lock()
	m.f.probing = false
	m.f.openTill = until
	others := m.others()
	m.f.mu.Unlock()
	for _, b := range others {
		b.Apply(true, until, trips)
	}
}

func (m member) ClaimProbe() bool {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	if m.f.probing && (m.f.timeout == 0 || time.Since(m.f.claimed) < m.f.timeout) {
		return false
	}
	m.f.probing, m.f.claimed = true, time.Now()
	m.f.claims++
	return true
}

func (m member) Close() {
	m.f.mu.Lock()
	m.f.probing = false
	others := m.others()
	m.f.mu.Unlock()
	for _, b := range others {
		b.Apply(false, time.Time{}, 0)
	}
}

func (m member) others() []*Breaker {
	var out []*Breaker
	for i, b := range m.f.members {
		if i != m.self {
			out = append(out, b)
		}
	}
	return out
}

func TestFleetBreakerOneProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fleet{}
		for i := range 3 {
			f.members = append(f.members, NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(2), Cooldown: 10 * time.Second, Shared: member{f, i}}))
		}
		a, b, c := f.members[0], f.members[1], f.members[2]
		fail(t, a, OutcomeFailure)
		fail(t, a, OutcomeFailure) // a trips: the whole fleet opens
		for i, m := range f.members {
			if m.State() != StateOpen {
				t.Fatalf("member %d is %v after a's trip", i, m.State())
			}
		}
		// Every member waits out the cooldown; exactly one becomes the probe.
		probes := make(chan func(Outcome), 3)
		for _, m := range f.members {
			go func() {
				done, err := m.Acquire(context.Background())
				if err == nil {
					probes <- done
				}
			}()
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if len(probes) != 1 || f.claims != 1 {
			t.Fatalf("%d probes running, %d claims; want exactly one", len(probes), f.claims)
		}
		for _, m := range []*Breaker{b, c} {
			if n, _ := allowanceNow(m); n != 0 && m.State() != StateClosed {
				t.Fatal("a member that does not probe may pull")
			}
		}
		(<-probes)(OutcomeSuccess) // the probe succeeds: everyone closes and runs
		synctest.Wait()
		for i, m := range f.members {
			if m.State() != StateClosed {
				t.Fatalf("member %d is %v after the probe succeeded", i, m.State())
			}
		}
		synctest.Wait()
		if len(probes) != 2 {
			t.Fatalf("%d waiting tasks ran after the close, want the other 2", len(probes))
		}
		for range 2 {
			(<-probes)(OutcomeSuccess)
		}
	})
}

// TestFleetBreakerSilentProber: when the instance that claimed the probe
// dies, another takes over once the probe has been silent long enough.
func TestFleetBreakerSilentProber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fleet{timeout: 25 * time.Second}
		for i := range 2 {
			f.members = append(f.members, NewBreaker(BreakerSettings{ReadyToTrip: ConsecutiveFailures(1), Cooldown: 10 * time.Second, Shared: member{f, i}}))
		}
		a, b := f.members[0], f.members[1]
		fail(t, a, OutcomeFailure) // the fleet opens
		time.Sleep(10 * time.Second)
		if _, err := a.Acquire(context.Background()); err != nil { // a claims the probe, then dies silently
			t.Fatal(err)
		}
		start := time.Now()
		done, err := b.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < 25*time.Second || waited > 40*time.Second {
			t.Fatalf("b took over after %v; want after the 25s probe timeout, within a cooldown of it", waited)
		}
		if f.claims != 2 {
			t.Fatalf("%d claims", f.claims)
		}
		done(OutcomeSuccess)
		if b.State() != StateClosed || a.State() != StateClosed {
			t.Fatalf("states %v %v after b's probe", a.State(), b.State())
		}
	})
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
