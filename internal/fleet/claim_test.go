package fleet

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
)

// A member that joins (or whose watch starts) while another member holds
// the fleet's probe claim does not pull or run: Watch applies the current
// entry before it returns.
func TestJoinerWaitsForAnotherMembersProbe(t *testing.T) {
	e := newFleetEnv(t)
	a, b := tripped(t, e, resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second})
	winner, _ := race(t, e, a, b)
	report, probe, ok := winner.TryAcquire()
	if !ok || !probe {
		t.Fatal("no probe")
	}
	defer report(resilience.OutcomeIgnored)
	c := e.member(t, "c", resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := c.Allowance(ctx)
	_, _, run := c.TryAcquire()
	t.Logf("joiner c: state %v, allowance %d (max=%v), err %v, TryAcquire ok %v", c.State(), n, n == math.MaxInt, err, run)
	if err == nil || run {
		t.Errorf("joiner pulls/runs while %s probes", winner.Name())
	}
}

// A prober whose probe ended Ignored does not keep a stale claim: once the
// claim times out and another member takes over, only one of them probes.
func TestTakenOverClaimLeavesOneProber(t *testing.T) {
	e := newFleetEnv(t)
	const probeTimeout = 2 * time.Second
	a, b := tripped(t, e, resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}, WithProbeTimeout(probeTimeout))
	winner, loser := race(t, e, a, b)
	r1, _, _ := winner.TryAcquire()
	r1(resilience.OutcomeIgnored) // a permanent error: another task may probe
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n, err := loser.Allowance(ctx); err != nil || n != 1 {
		t.Fatalf("no takeover: %d %v", n, err)
	}
	rl, pl, okl := loser.TryAcquire()
	rw, pw, okw := winner.TryAcquire()
	t.Logf("loser probe %v ok %v; winner probe %v ok %v", pl, okl, pw, okw)
	if okl && okw && pl && pw {
		t.Errorf("two members probe at once")
	}
	if rl != nil {
		rl(resilience.OutcomeIgnored)
	}
	if rw != nil {
		rw(resilience.OutcomeIgnored)
	}
}
