package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// TestMixedTasksRunExactlyOnce publishes 1,000 tasks of four node types as
// JSON Lines through the producer's bulk path and checks each ran once.
func TestMixedTasksRunExactlyOnce(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	defer hook.Close()
	proc, err := executor.Process(executor.ProcessConfig{Command: []string{"cat"}, PassEnv: []string{"PATH"}})
	if err != nil {
		t.Fatal(err)
	}
	web, err := executor.HTTP(executor.HTTPConfig{URL: hook.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := newCounter()
	reg := executor.NewRegistry()
	for name, ex := range map[string]executor.Executor{"echo": executor.Echo(), "sleep": executor.Sleep(time.Second), "proc": proc, "web": web} {
		if err := reg.Register(executor.Node{Type: name, Executor: c.wrap(ex), Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}

	const n = 1000
	types := []string{"echo", "sleep", "proc", "web"}
	var lines bytes.Buffer
	for i := range n {
		fmt.Fprintf(&lines, `{"id":"task-%04d","node_type":%q,"payload":{"i":%d},"params":{"duration":"1ms"}}`+"\n", i, types[i%len(types)], i)
	}
	published := 0
	tasks := func(yield func(*task.Envelope) bool) {
		for env, err := range task.ReadLines(&lines, 0) {
			if err != nil {
				t.Fatal(err)
			}
			if !yield(env) {
				return
			}
		}
	}
	err = queue.NewPublisher(e.js, e.names).PublishAll(context.Background(), tasks, 256, func(o queue.Outcome) {
		if o.Err != nil || o.Ack.Duplicate {
			t.Errorf("task %s: %v (duplicate %v)", o.Task.ID, o.Err, o.Ack != nil && o.Ack.Duplicate)
			return
		}
		published++
	})
	if err != nil || published != n {
		t.Fatalf("published %d of %d: %v", published, n, err)
	}

	r := e.start(reg, runnerOpts{workers: 8})
	eventually(t, 60*time.Second, "all tasks to run and be acked", func() bool {
		return c.total() >= n && e.streamMsgs(e.names.TaskStream) == 0
	})
	if !r.stop() {
		t.Fatal("shutdown did not finish in time")
	}
	runs := c.snapshot()
	dups, missing := 0, 0
	for i := range n {
		switch runs[fmt.Sprintf("task-%04d", i)] {
		case 0:
			missing++
		case 1:
		default:
			dups++
		}
	}
	t.Logf("published %d, succeeded %d, dead-lettered %d, duplicates %d, lost %d", n, len(runs), e.streamMsgs(e.names.DLQStream), dups, missing)
	if dups != 0 || missing != 0 || len(runs) != n {
		t.Fatalf("duplicates %d, missing %d, distinct %d", dups, missing, len(runs))
	}
	if p := e.ackPending(); p != 0 {
		t.Fatalf("%d tasks unacknowledged", p)
	}
	if d := e.streamMsgs(e.names.DLQStream); d != 0 {
		t.Fatalf("%d dead-letter records", d)
	}
}

// TestResultOnReplySubject checks results reach reply subjects in the
// task's encoding.
func TestResultOnReplySubject(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	e.start(reg, runnerOpts{})

	inbox := e.nc.NewInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	// A JSON task published by hand, as the nats CLI would.
	msg := &natsMsg{subject: "tasks.echo", data: `{"id":"j1","node_type":"echo","payload":{"text":"hi"},"reply_to":"` + inbox + `"}`, ct: "application/json"}
	e.publishRaw(msg)
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ct := m.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("result content type %q", ct)
	}
	res, err := task.DecodeResult(m.Data, "application/json")
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || string(res.Output) != `{"text":"hi"}` || res.TaskID != "j1" || res.Attempts != 1 {
		t.Fatalf("%+v (%s)", res, m.Data)
	}
}

type natsMsg struct {
	subject, data, ct string
	headers           map[string]string
}

func (e *env) publishRaw(m *natsMsg) {
	e.t.Helper()
	msg := newMsg(m)
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		e.t.Fatal(err)
	}
}

// TestGracefulShutdownLosesNoneRunsNoneTwice stops a consumer while tasks
// run, then lets a second one finish the rest.
func TestGracefulShutdownLosesNoneRunsNoneTwice(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	c := newCounter()
	var mu sync.Mutex
	running := 0
	started := make(chan struct{}, 100)
	slow := executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		mu.Lock()
		running++
		mu.Unlock()
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond) // ignores ctx: a node that must be allowed to finish
		mu.Lock()
		running--
		mu.Unlock()
		return nil, nil
	})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "slow", Executor: c.wrap(slow)})

	const n = 20
	pub := queue.NewPublisher(e.js, e.names)
	for i := range n {
		if _, err := pub.Publish(context.Background(), &task.Envelope{ID: fmt.Sprintf("s-%d", i), NodeType: "slow"}); err != nil {
			t.Fatal(err)
		}
	}
	r := e.start(reg, runnerOpts{workers: 4, shutdownTimeout: 10 * time.Second})
	for range 4 {
		<-started
	}
	if !r.stop() {
		t.Fatal("in-flight tasks did not finish within the shutdown timeout")
	}
	mu.Lock()
	if running != 0 {
		t.Fatalf("%d tasks still running after shutdown returned", running)
	}
	mu.Unlock()
	firstRun := c.total()
	if firstRun < 4 || firstRun >= n {
		t.Fatalf("first consumer ran %d tasks; want at least the 4 in flight and not all", firstRun)
	}
	// Prefetched tasks were handed back (nak): the server counts them as
	// ack-pending until it delivers them again, which it does at once.
	if p := e.ackPending(); p > config.DefaultPrefetch {
		t.Fatalf("%d tasks left unacknowledged by a clean shutdown; at most the %d prefetched may wait for redelivery", p, config.DefaultPrefetch)
	}
	if left := e.streamMsgs(e.names.TaskStream); int(left) != n-firstRun {
		t.Fatalf("stream holds %d tasks, want %d", left, n-firstRun)
	}

	// The rest run at once, long before an AckWait would bring back a task
	// the shutdown left unsettled.
	start := time.Now()
	e.start(reg, runnerOpts{workers: 4, ackWait: time.Minute})
	eventually(t, 30*time.Second, "the rest to run", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 && c.total() >= n })
	if took := time.Since(start); took > 6*time.Second { // the server's AckWait is 10s
		t.Fatalf("the rest took %v: some waited for an AckWait", took)
	}
	for id, k := range c.snapshot() {
		if k != 1 {
			t.Errorf("task %s ran %d times", id, k)
		}
	}
	if len(c.snapshot()) != n {
		t.Fatalf("%d distinct tasks ran, want %d", len(c.snapshot()), n)
	}
}

// TestShutdownTimeoutHandsTasksBack: a node that outlives the shutdown
// timeout is interrupted and its task handed back, not dead-lettered.
func TestShutdownTimeoutHandsTasksBack(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	started := make(chan struct{}, 1)
	block := executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "block", Executor: block})
	if _, err := queue.NewPublisher(e.js, e.names).Publish(context.Background(), &task.Envelope{ID: "b1", NodeType: "block"}); err != nil {
		t.Fatal(err)
	}
	r := e.start(reg, runnerOpts{workers: 1, shutdownTimeout: 100 * time.Millisecond})
	<-started
	if r.stop() {
		t.Fatal("shutdown reported in time although the node blocked")
	}
	if d := e.streamMsgs(e.names.DLQStream); d != 0 {
		t.Fatalf("interrupted task was dead-lettered (%d records)", d)
	}
	if m := e.streamMsgs(e.names.TaskStream); m != 1 {
		t.Fatalf("task stream holds %d, want the handed-back task", m)
	}
	// The hand-back is a Nak, so the task is at once deliverable again, well
	// before AckWait (30s) would have returned it: a new consumer gets it now.
	c := newCounter()
	reg2 := executor.NewRegistry()
	_ = reg2.Register(executor.Node{Type: "block", Executor: c.wrap(executor.Echo())})
	start := time.Now()
	e.start(reg2, runnerOpts{workers: 1})
	eventually(t, 10*time.Second, "the handed-back task to run", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	if took := time.Since(start); took >= 10*time.Second || c.snapshot()["b1"] != 1 {
		t.Fatalf("handed-back task ran %d times after %v", c.snapshot()["b1"], took)
	}
}

// TestSetupIsIdempotent: ten consumers starting at once on a fresh server do not fight.
func TestSetupIsIdempotent(t *testing.T) {
	srv := natstest.Server(t)
	names := queue.DefaultNames()
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, js := natstest.Connect(t, srv) // one connection each, like ten processes
			if err := queue.EnsureStreams(context.Background(), js, names, queue.StreamOptions{}); err != nil {
				errs <- err
				return
			}
			_, err := queue.EnsureConsumer(context.Background(), js, names, queue.ConsumerOptions{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	_, js := natstest.Connect(t, srv)
	stream, err := js.Stream(context.Background(), names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for range stream.ConsumerNames(context.Background()).Name() {
		count++
	}
	if count != 1 {
		t.Fatalf("%d consumers on the task stream, want 1", count)
	}
	if _, err := js.Stream(context.Background(), names.DLQStream); err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
}

// TestPullsOnlyForIdleWorkers: with every worker busy, nothing but the
// prefetch is delivered to the process: the rest of the tasks wait in the
// stream.
func TestPullsOnlyForIdleWorkers(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	hold := executor.Func(func(ctx context.Context, tk *task.Envelope) ([]byte, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "hold", Executor: hold})
	pub := queue.NewPublisher(e.js, e.names)
	for i := range 10 {
		if _, err := pub.Publish(context.Background(), &task.Envelope{ID: fmt.Sprintf("h-%d", i), NodeType: "hold"}); err != nil {
			t.Fatal(err)
		}
	}
	e.start(reg, runnerOpts{workers: 3, prefetch: 2})
	for range 3 {
		<-started
	}
	// Several pull cycles (200ms each) pass while all three workers are busy.
	time.Sleep(700 * time.Millisecond)
	ci, err := e.cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending != 5 || ci.NumPending != 5 || ci.Delivered.Consumer != 5 {
		t.Fatalf("ack pending %d, pending %d, delivered %d; want 5, 5, 5 (3 running, 2 prefetched)", ci.NumAckPending, ci.NumPending, ci.Delivered.Consumer)
	}
	close(release)
	eventually(t, 10*time.Second, "all tasks to finish", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
}
