package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// instance is one consumer of a fleet: its own connection, breaker and
// workers, as a separate process would have.
type instance struct {
	env     *env
	breaker *resilience.Breaker
	down    atomic.Bool // this instance's downstream fails
	j       *journal
}

func newInstance(t *testing.T, base *env, id string) *instance {
	t.Helper()
	nc, err := nats.Connect(base.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js := newJS(t, nc)
	cons, err := queue.EnsureConsumer(context.Background(), js, base.names, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: base.srv, nc: nc, js: js, names: base.names, cons: cons}
	fb, err := fleet.NewFleetBreaker(context.Background(), js, base.names, id, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{env: e, j: &journal{}}
	in.breaker = resilience.NewBreaker(resilience.BreakerSettings{Name: id, ReadyToTrip: resilience.ConsecutiveFailures(3), Cooldown: 4 * time.Second, Shared: fb})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := fb.Watch(ctx, in.breaker); err != nil {
		t.Fatal(err)
	}
	downstream := executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		if in.down.Load() {
			return nil, resilience.Errorf(resilience.Transport, "%s: downstream unreachable", id)
		}
		return nil, nil
	})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "call", Executor: in.j.wrap(downstream, in.breaker)})
	e.start(reg, runnerOpts{workers: 2, breaker: in.breaker, retry: resilience.None(),
		redelivery: resilience.Redelivery{MaxDeliveries: 100, Backoff: []time.Duration{100 * time.Millisecond}}})
	return in
}

// TestFleetBreaker: failures on one of two consumers open the breaker of
// both; neither pulls until the cooldown; exactly one probe runs; its
// success resumes both.
func TestFleetBreaker(t *testing.T) {
	base := newEnv(t, queue.StreamOptions{})
	a := newInstance(t, base, "a")
	b := newInstance(t, base, "b")
	a.down.Store(true) // failures injected on a only

	var mu sync.Mutex
	seq := 0
	publish := func(k int) {
		mu.Lock()
		defer mu.Unlock()
		for range k {
			base.publish(&task.Envelope{ID: fmt.Sprintf("f-%d", seq), NodeType: "call"})
			seq++
		}
	}
	publish(40)
	eventually(t, 20*time.Second, "a's failures to open both breakers", func() bool {
		return a.breaker.State() == resilience.StateOpen && b.breaker.State() == resilience.StateOpen
	})
	// Within one pull, nobody receives anything more.
	time.Sleep(pullWait + 200*time.Millisecond)
	ci, _ := base.cons.Info(context.Background())
	delivered := ci.Delivered.Consumer
	runs := len(a.j.all()) + len(b.j.all())
	publish(20)
	time.Sleep(time.Second) // the cooldown is 4s: a wide margin on a loaded machine
	ci, _ = base.cons.Info(context.Background())
	if ci.Delivered.Consumer != delivered || len(a.j.all())+len(b.j.all()) != runs {
		t.Fatalf("the fleet pulled or ran while open: delivered %d -> %d, runs %d -> %d", delivered, ci.Delivered.Consumer, runs, len(a.j.all())+len(b.j.all()))
	}
	if !ci.Paused {
		t.Fatal("the consumer is not paused on the server")
	}

	a.down.Store(false) // the downstream recovers
	eventually(t, 30*time.Second, "every task", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return base.streamMsgs(base.names.TaskStream) == 0
	})
	halfOpen, duringOpen := 0, 0
	for _, in := range []*instance{a, b} {
		for _, r := range in.j.all() {
			switch r.state {
			case resilience.StateHalfOpen:
				halfOpen++
			case resilience.StateOpen:
				duringOpen++
			}
		}
	}
	t.Logf("runs: a %d, b %d; probes %d", len(a.j.all()), len(b.j.all()), halfOpen)
	if halfOpen != 1 || duringOpen != 0 {
		t.Fatalf("%d runs while half-open (want exactly one probe), %d while open", halfOpen, duringOpen)
	}
	if a.breaker.State() != resilience.StateClosed || b.breaker.State() != resilience.StateClosed {
		t.Fatalf("breakers %v, %v after recovery", a.breaker.State(), b.breaker.State())
	}
	if d := base.streamMsgs(base.names.DLQStream); d != 0 {
		t.Fatalf("%d tasks dead-lettered", d)
	}
}
