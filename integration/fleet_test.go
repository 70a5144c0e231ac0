package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// instance is one consumer of a fleet: its own connection, breaker and
// workers, as a separate process would have.
type instance struct {
	breaker *resilience.Breaker // its own breaker, under the fleet's layer
	down    atomic.Bool         // this instance's downstream fails
	j       *journal
}

// newInstance runs a consumer with breaker.scope fleet, the production
// wiring, over a local breaker of the test's.
func newInstance(t *testing.T, base *env, id string) *instance {
	t.Helper()
	nc, err := nats.Connect(base.srv.ClientURL(), queue.ConsumerInbox())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js := newJS(t, nc)
	cons, err := queue.EnsureConsumer(context.Background(), js, base.names, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{j: &journal{}}
	in.breaker = resilience.NewBreaker(resilience.BreakerSettings{Name: id, ReadyToTrip: resilience.ConsecutiveFailures(3), Cooldown: 4 * time.Second})
	downstream := executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		if in.down.Load() {
			return nil, resilience.Errorf(resilience.Transport, "%s: downstream unreachable", id)
		}
		return nil, nil
	})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "call", Executor: in.j.wrap(downstream, in.breaker)})
	cfg := config.Default()
	n := base.names
	cfg.Names = config.Names{TaskStream: n.TaskStream, TaskPrefix: n.TaskPrefix, DLQStream: n.DLQStream, DLQPrefix: n.DLQPrefix, Consumer: n.Consumer}
	cfg.Consumer.Workers, cfg.Consumer.PullWait = 2, pullWait
	cfg.Breaker.Scope = "fleet"
	c, err := consumer.New(context.Background(), consumer.Options{Config: cfg, Conn: nc, Logger: testLogger(t), Registry: reg, ID: id,
		Durable: cons, Breaker: in.breaker, Retry: resilience.None(),
		Redelivery: &resilience.Redelivery{MaxDeliveries: 100, Backoff: []time.Duration{100 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer %s: %v", id, err)
		}
	})
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
