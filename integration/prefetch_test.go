package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// TestBreakerHandsPrefetchedToHealthyProcess: when a process's breaker
// opens, no task starts there any more, and the tasks it prefetched go back
// to the stream at once, where a healthy process takes them long before an
// AckWait (10s) would have brought them back.
func TestBreakerHandsPrefetchedToHealthyProcess(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	var mu sync.Mutex
	var tripped time.Time
	ranOnBroken := map[string]time.Time{}
	b := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(2), Cooldown: time.Hour,
		OnStateChange: func(_ string, _, to resilience.State) {
			if to == resilience.StateOpen {
				mu.Lock()
				tripped = time.Now()
				mu.Unlock()
			}
		}})
	broken := executor.NewRegistry()
	_ = broken.Register(executor.Node{Type: "call", Executor: executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		mu.Lock()
		ranOnBroken[tk.ID] = time.Now()
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		return nil, resilience.Errorf(resilience.Transport, "downstream unavailable from this process")
	})})
	// Failed tasks come back after an hour: within the test only the tasks
	// handed back (and those never pulled) are there for the healthy process.
	e.start(broken, runnerOpts{workers: 2, breaker: b, retry: resilience.None(),
		redelivery: resilience.Redelivery{MaxDeliveries: 100, Backoff: []time.Duration{time.Hour}}})

	const n = 40
	var envs []*task.Envelope
	for i := range n {
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("c-%02d", i), NodeType: "call"})
	}
	e.publish(envs...)
	eventually(t, 10*time.Second, "the breaker to open", func() bool { return b.State() == resilience.StateOpen })
	time.Sleep(200 * time.Millisecond) // the runs under way when it opened end
	mu.Lock()
	failed := len(ranOnBroken)
	mu.Unlock()

	healthy := executor.NewRegistry()
	c := newCounter()
	_ = healthy.Register(executor.Node{Type: "call", Executor: c.wrap(executor.Echo())})
	start := time.Now()
	e.start(healthy, runnerOpts{workers: 4})
	eventually(t, 5*time.Second, "the healthy process to run every task the broken one did not", func() bool { return c.total() >= n-failed })
	took := time.Since(start)
	// The last acks may still be on their way: a run counts before its ack.
	eventually(t, 5*time.Second, "the healthy process's acks", func() bool { return int(e.streamMsgs(e.names.TaskStream)) <= failed })

	mu.Lock()
	defer mu.Unlock()
	for id, at := range ranOnBroken {
		if at.After(tripped) {
			t.Errorf("task %s started on the broken process %v after its breaker opened", id, at.Sub(tripped))
		}
	}
	for id, k := range c.snapshot() {
		if _, ran := ranOnBroken[id]; ran || k != 1 {
			t.Errorf("task %s ran %d times on the healthy process (ran on the broken one: %v)", id, k, ran)
		}
	}
	// The failed ones wait out their hour in the stream: nothing is lost.
	left := e.streamMsgs(e.names.TaskStream)
	t.Logf("published %d, succeeded %d, waiting to be redelivered %d (failed on the broken process), lost %d; the healthy process took %v",
		n, c.total(), left, n-c.total()-int(left), took)
	if c.total()+int(left) != n || int(left) != failed {
		t.Fatalf("published %d != succeeded %d + waiting %d (want the %d that failed)", n, c.total(), left, failed)
	}
}
