package nodeq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq"
	"github.com/nodeq/nodeq/internal/dlq"
)

// A plain error is transient: retried in process with backoff, then
// redelivered by JetStream; the task succeeds on its second delivery, and
// nothing is dead-lettered.
func TestTransientErrorRetriedThenSucceeds(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv) // 3 attempts per delivery, 3 deliveries
	type run struct{ attempt, delivery int }
	var mu sync.Mutex
	var runs []run
	startConsumer(t, cfg, handlers{"flaky": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		mu.Lock()
		runs = append(runs, run{tk.Attempt, tk.Delivery})
		mu.Unlock()
		if tk.Delivery == 1 {
			return nil, fmt.Errorf("downstream unavailable (attempt %d)", tk.Attempt)
		}
		return []byte("done"), nil
	}})
	client := newClient(t, cfg)

	res, err := client.Call(callCtx(t), "flaky", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || string(res.Output) != "done" || res.Attempts != 1 {
		t.Fatalf("result %+v, want ok \"done\" on the first attempt of its last delivery", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []run{{1, 1}, {2, 1}, {3, 1}, {1, 2}}; !slices.Equal(runs, want) {
		t.Fatalf("runs (attempt, delivery) = %v, want %v", runs, want)
	}
	if recs := deadLetters(t, inspect(t, srv)); len(recs) != 0 {
		t.Fatalf("%d dead letters, want none", len(recs))
	}
}

// A plain error that never goes away is dead-lettered once the retries and
// redeliveries are spent, with its kind Execution.
func TestTransientErrorExhaustedIsDeadLettered(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	cfg.Redelivery.MaxDeliveries = 2
	var mu sync.Mutex
	runs := 0
	startConsumer(t, cfg, handlers{"down": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		mu.Lock()
		runs++
		mu.Unlock()
		return nil, errors.New("still down")
	}})
	_, err := newClient(t, cfg).Call(callCtx(t), "down", nil)
	var failed *nodeq.TaskError
	if !errors.As(err, &failed) {
		t.Fatalf("err = %v, want a *TaskError", err)
	}
	if failed.Result.ErrorKind != "Execution" || failed.Result.Error != "still down" || failed.Result.Attempts != 3 {
		t.Fatalf("result %+v, want Execution \"still down\" after 3 attempts", failed.Result)
	}
	recs := deadLetters(t, inspect(t, srv))
	if len(recs) != 1 || recs[0].Reason != dlq.ReasonExhausted || recs[0].Deliveries != 2 {
		t.Fatalf("dead letters %+v, want one %s after 2 deliveries", recs, dlq.ReasonExhausted)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 6 {
		t.Fatalf("the handler ran %d times, want 3 attempts x 2 deliveries", runs)
	}
}

// Permanent errors are dead-lettered at once; every task published is
// either succeeded or dead-lettered, none lost, and the metrics agree.
func TestPermanentErrorDeadLetteredAndAccounted(t *testing.T) {
	const published = 40
	srv := startServer(t)
	cfg := testConfig(srv)
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	succeeded := map[string]bool{}
	runs := map[string]int{}
	startConsumer(t, cfg, handlers{"parse": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		runs[tk.ID]++
		n, _ := strconv.Atoi(string(tk.Payload))
		if n%3 == 0 {
			return nil, fmt.Errorf("task %d: %w", n, nodeq.Permanent(errors.New("multiple of three")))
		}
		succeeded[tk.ID] = true
		return tk.Payload, nil
	}}, nodeq.WithMetrics(reg))
	client := newClient(t, cfg)
	js := inspect(t, srv)

	wantFailed := map[string]bool{}
	for i := range published {
		id := "task-" + strconv.Itoa(i)
		if _, err := client.Publish(t.Context(), "parse", []byte(strconv.Itoa(i)), nodeq.WithTaskID(id)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			wantFailed[id] = true
		}
	}
	eventually(t, "every task settled", func() bool {
		return counterValue(t, reg, "parse", "succeeded")+counterValue(t, reg, "parse", "dead_lettered") == published
	})

	// Counted once the ack or the terminate is sent; the stream drops
	// the task once the server has processed it.
	eventually(t, "the task stream to empty", func() bool { return streamMsgs(t, js, "NODEQ_TASKS") == 0 })

	recs := deadLetters(t, js)
	gotFailed := map[string]bool{}
	for _, r := range recs {
		gotFailed[r.TaskID] = true
		if r.Reason != dlq.ReasonPermanent || r.ErrorKind != "Other" || r.Attempts != 1 || r.Deliveries != 1 {
			t.Errorf("record of %s: reason %s kind %s after %d attempts, %d deliveries; want %s Other at the first attempt",
				r.TaskID, r.Reason, r.ErrorKind, r.Attempts, r.Deliveries, dlq.ReasonPermanent)
		}
		if !strings.Contains(r.Error, "multiple of three") {
			t.Errorf("record of %s: error %q", r.TaskID, r.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(recs) != len(wantFailed) || len(gotFailed) != len(wantFailed) {
		t.Fatalf("%d dead letters for %d tasks, want %d", len(recs), len(gotFailed), len(wantFailed))
	}
	for id := range wantFailed {
		if !gotFailed[id] || succeeded[id] || runs[id] != 1 {
			t.Errorf("task %s: dead-lettered %v, succeeded %v, ran %d times; want dead-lettered after one run", id, gotFailed[id], succeeded[id], runs[id])
		}
	}
	lost := published - len(succeeded) - len(recs)
	if lost != 0 || streamMsgs(t, js, "NODEQ_TASKS") != 0 {
		t.Fatalf("published %d = succeeded %d + dead-lettered %d + lost %d; %d left in the task stream",
			published, len(succeeded), len(recs), lost, streamMsgs(t, js, "NODEQ_TASKS"))
	}
}

// A panicking handler dead-letters its task with the stack, and the
// consumer goes on serving.
func TestPanicDoesNotKillTheProcess(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	startConsumer(t, cfg, handlers{"crash": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		if string(tk.Payload) == "boom" {
			panic("cannot handle " + string(tk.Payload))
		}
		return []byte("fine"), nil
	}})
	client := newClient(t, cfg)

	_, err := client.Call(callCtx(t), "crash", []byte("boom"))
	var failed *nodeq.TaskError
	if !errors.As(err, &failed) || failed.Result.ErrorKind != "Other" || !strings.Contains(failed.Result.Error, "panicked") || failed.Result.Attempts != 1 {
		t.Fatalf("err = %v, want a *TaskError of kind Other saying the node panicked, after one attempt", err)
	}
	res, err := client.Call(callCtx(t), "crash", []byte("calm"))
	if err != nil || string(res.Output) != "fine" {
		t.Fatalf("after the panic: %v, %v", res, err)
	}
	recs := deadLetters(t, inspect(t, srv))
	if len(recs) != 1 || recs[0].Reason != dlq.ReasonPermanent || !strings.Contains(recs[0].Stack, "consumer_test.go") {
		t.Fatalf("dead letters %+v, want one permanent record with the handler's stack", recs)
	}
}

// Handle refuses what cannot be a node type, twice the same one, one the
// configuration declares, a nil handler, and handlers after Start.
func TestHandleErrors(t *testing.T) {
	noop := func(ctx context.Context, tk *nodeq.Task) ([]byte, error) { return nil, nil }
	cfg := nodeq.DefaultConfig()
	cfg.Nodes["echo"] = nodeq.NodeConfig{}
	c, err := nodeq.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handle("resize", noop); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		nodeType string
		handler  nodeq.Handler
		want     string
	}{
		{"resize", noop, `"resize": node type registered twice`},
		{"echo", noop, `"echo": node type already declared in the configuration (nodes.echo)`},
		{"", noop, `invalid node type ""`},
		{"image.resize", noop, `invalid node type "image.resize"`},
		{"tasks.>", noop, "invalid node type"},
		{"*", noop, "invalid node type"},
		{"a b", noop, "invalid node type"},
		{"line\nbreak", noop, "invalid node type"},
		{"é", noop, "invalid node type"},
		{strings.Repeat("n", 65), noop, "invalid node type"},
		{"thumb", nil, `"thumb": nil handler`},
	}
	for _, tc := range cases {
		err := c.Handle(tc.nodeType, tc.handler)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Handle(%q) = %v, want an error containing %q", tc.nodeType, err, tc.want)
		}
	}
	if got := c.NodeTypes(); !slices.Equal(got, []string{"echo", "resize"}) {
		t.Fatalf("node types %v after refused registrations", got)
	}
	if err := c.Handle(strings.Repeat("n", 64), noop); err != nil {
		t.Fatalf("a 64-character node type: %v", err)
	}

	srv := startServer(t)
	cfg.NATS.URL = srv.URL()
	started := startConsumer(t, cfg, nil)
	if err := started.Handle("late", noop); err == nil || !strings.Contains(err.Error(), "register handlers before Start") {
		t.Fatalf("Handle after Start = %v", err)
	}
	if err := started.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "already started") {
		t.Fatalf("a second Start = %v", err)
	}
}

// Run returns once its context is cancelled, after a clean shutdown, and a
// task in flight then finishes and is acked.
func TestRunReturnsWhenContextCancelled(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	running, release := make(chan struct{}), make(chan struct{})
	c := newConsumer(t, cfg, handlers{"slow": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		close(running)
		<-release
		return []byte("finished"), nil
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	client := newClient(t, cfg)
	js := inspect(t, srv)
	eventually(t, "the streams exist", func() bool {
		_, err := js.Stream(t.Context(), "NODEQ_TASKS")
		return err == nil
	})
	if _, err := client.Publish(t.Context(), "slow", nil); err != nil {
		t.Fatal(err)
	}
	<-running
	cancel()
	select {
	case err := <-ran:
		t.Fatalf("Run returned %v while a task was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run = %v, want nil after a clean shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if n := streamMsgs(t, js, "NODEQ_TASKS"); n != 0 {
		t.Fatalf("%d tasks left in the stream: the in-flight task was not acked", n)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop after Run: %v", err)
	}
}

// A Go handler and a configured node type (echo) run side by side in one
// consumer; the configured one keeps its own behaviour.
func TestGoHandlerBesideConfiguredNodeType(t *testing.T) {
	srv := startServer(t)
	cfg, err := nodeq.ParseConfig("nodeq.yaml", []byte("nats:\n  url: "+srv.URL()+"\nnodes:\n  echo: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := startConsumer(t, cfg, handlers{"upper": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		return []byte(strings.ToUpper(string(tk.Payload))), nil
	}})
	if got := c.NodeTypes(); !slices.Equal(got, []string{"echo", "upper"}) {
		t.Fatalf("node types %v", got)
	}
	client := newClient(t, cfg)
	for nodeType, want := range map[string]string{"echo": "hi there", "upper": "HI THERE"} {
		res, err := client.Call(callCtx(t), nodeType, []byte("hi there"))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Output) != want || res.NodeType != nodeType {
			t.Fatalf("%s: output %q from %s, want %q", nodeType, res.Output, res.NodeType, want)
		}
	}
	// A node type the consumer does not run is dead-lettered as Manifest.
	_, err = client.Call(callCtx(t), "sleep", nil)
	var failed *nodeq.TaskError
	if !errors.As(err, &failed) || failed.Result.ErrorKind != "Manifest" {
		t.Fatalf("a task of an unknown node type: %v, want a *TaskError of kind Manifest", err)
	}
}

// The handler sees every field of the task it was published with.
func TestTaskFields(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	got := make(chan nodeq.Task, 1)
	startConsumer(t, cfg, handlers{"inspect": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		got <- *tk
		return nil, nil
	}})
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	payload := []byte{0, 1, 2, 0xff}
	res, err := newClient(t, cfg).Call(callCtx(t), "inspect", payload, nodeq.WithTaskID("t-1"), nodeq.WithNodeID("n7"),
		nodeq.WithCorrelationID("run-3"), nodeq.WithParams(map[string]any{"width": 640}), nodeq.WithDeadline(deadline))
	if err != nil {
		t.Fatal(err)
	}
	tk := <-got
	if tk.ID != "t-1" || tk.NodeID != "n7" || tk.CorrelationID != "run-3" || tk.NodeType != "inspect" || string(tk.Payload) != string(payload) ||
		tk.PayloadEncoding != "bytes" || fmt.Sprint(tk.Params["width"]) != "640" || !tk.Deadline.Equal(deadline) || tk.CreatedAt.IsZero() ||
		tk.Attempt != 1 || tk.Delivery != 1 {
		t.Fatalf("task %+v", tk)
	}
	if res.TaskID != "t-1" || res.NodeID != "n7" || !res.OK || len(res.Output) != 0 || res.Worker == "" {
		t.Fatalf("result %+v", res)
	}
}

// WithTimeout ends a handler's context; the attempt is a transient failure.
func TestHandlerTimeout(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	c := newConsumer(t, cfg, nil)
	err := c.Handle("patient", func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		if tk.Attempt == 1 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return []byte("second time"), nil
	}, nodeq.WithTimeout(50*time.Millisecond), nodeq.WithConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	res, err := newClient(t, cfg).Call(callCtx(t), "patient", nil)
	if err != nil || res.Attempts != 2 {
		t.Fatalf("result %+v, %v; want success at the second attempt", res, err)
	}
}

// Client needs a started consumer: before Start there is no server to
// connect to.
func TestConsumerClientBeforeStart(t *testing.T) {
	c, err := nodeq.NewConsumer(nodeq.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cl, err := c.Client(); err == nil || cl != nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("Client before Start = %v, %v", cl, err)
	}
}

// A Start that fails in its set-up returns the error (it used to panic on
// the nil result it was closing) and releases what it opened: the embedded
// server's port and store directory.
func TestStartFailureReleasesTheEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(startServer(t))
	cfg.NATS.URL = ""
	cfg.Embedded.Listen, cfg.Embedded.StoreDir = freeAddr(t), dir
	c := newConsumer(t, cfg, handlers{"greet": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) { return nil, nil }})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Start(cancelled); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled ctx = %v, want context.Canceled", err)
	}
	if cl, err := c.Client(); err == nil {
		cl.Close()
		t.Fatal("Client of a consumer whose Start failed: no error")
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop after a failed Start = %v", err)
	}
	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: cfg.Embedded.Listen, StoreDir: dir})
	if err != nil {
		t.Fatalf("the failed Start still holds the embedded server's address or store directory: %v", err)
	}
	srv.Shutdown()
}
