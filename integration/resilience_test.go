package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// journal records every run of a node: when, which attempt, and its outcome.
type journal struct {
	mu   sync.Mutex
	runs []run
}

type run struct {
	id      string
	at      time.Time
	attempt executor.Attempt
	err     error
	state   resilience.State // breaker state when the run started, if a breaker was given
}

func (j *journal) wrap(ex executor.Executor, b *resilience.Breaker) executor.Executor {
	return executor.Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		r := run{id: t.ID, at: time.Now(), attempt: executor.AttemptFrom(ctx)}
		if b != nil {
			r.state = b.State()
		}
		defer func() {
			if p := recover(); p != nil {
				r.err = fmt.Errorf("panic: %v", p)
				j.add(r)
				panic(p)
			}
		}()
		out, err := ex.Execute(ctx, t)
		r.err = err
		j.add(r)
		return out, err
	})
}

func (j *journal) add(r run) {
	j.mu.Lock()
	j.runs = append(j.runs, r)
	j.mu.Unlock()
}

func (j *journal) of(id string) []run {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []run
	for _, r := range j.runs {
		if r.id == id {
			out = append(out, r)
		}
	}
	return out
}

func (j *journal) all() []run {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]run(nil), j.runs...)
}

func faultRegistry(j *journal, b *resilience.Breaker) *executor.Registry {
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "fault", Executor: j.wrap(executor.Fault(), b)})
	_ = reg.Register(executor.Node{Type: "echo", Executor: j.wrap(executor.Echo(), b)})
	return reg
}

func (e *env) publish(envs ...*task.Envelope) {
	e.t.Helper()
	pub := queue.NewPublisher(e.js, e.names)
	for _, env := range envs {
		if _, err := pub.Publish(context.Background(), env); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestTransientTwiceThenSucceeds: two transient failures are retried in
// process with the default backoff (100ms, 200ms) and the task succeeds.
func TestTransientTwiceThenSucceeds(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	e.start(faultRegistry(j, nil), runnerOpts{}) // default policy
	inbox := e.nc.NewInbox()
	sub, _ := e.nc.SubscribeSync(inbox)
	e.publish(&task.Envelope{ID: "t2", NodeType: "fault", ReplyTo: inbox, Params: task.Params{"kind": "Transport", "times": 2}})
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := task.DecodeResult(m.Data, m.Header.Get("Content-Type"))
	if !res.OK || res.Attempts != 3 {
		t.Fatalf("result %+v", res)
	}
	runs := j.of("t2")
	if len(runs) != 3 {
		t.Fatalf("%d runs, want 3", len(runs))
	}
	for i, r := range runs {
		if r.attempt.Number != i+1 || r.attempt.Delivery != 1 {
			t.Fatalf("run %d was %+v; retries must stay in process (one delivery)", i+1, r.attempt)
		}
	}
	d1, d2 := runs[1].at.Sub(runs[0].at), runs[2].at.Sub(runs[1].at)
	t.Logf("retry delays: %v, %v", d1, d2)
	if d1 < 100*time.Millisecond || d1 > time.Second || d2 < 200*time.Millisecond || d2 > 1100*time.Millisecond {
		t.Fatalf("retry delays %v, %v; want about 100ms and 200ms", d1, d2)
	}
	eventually(t, 5*time.Second, "the task to be acked", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	if n := e.streamMsgs(e.names.DLQStream); n != 0 {
		t.Fatalf("%d dead-letter records", n)
	}
}

// TestPermanentFailureOneFullRecord: a permanent error is not retried and
// leaves exactly one record with every context field filled.
func TestPermanentFailureOneFullRecord(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	e.start(faultRegistry(j, nil), runnerOpts{})
	env := &task.Envelope{ID: "p1", NodeID: "node-7", NodeType: "fault", CorrelationID: "run-3", Payload: []byte("input"),
		Params: task.Params{"kind": "Manifest", "message": "width must be positive"}}
	msg, err := queue.NewPublisher(e.js, e.names).Message(env)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set("X-Trace", "abc")
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the record", func() bool {
		return e.streamMsgs(e.names.DLQStream) == 1 && e.streamMsgs(e.names.TaskStream) == 0
	})
	if runs := j.of("p1"); len(runs) != 1 {
		t.Fatalf("a permanent error ran %d times", len(runs))
	}
	recs := e.records()
	r := recs[0].rec
	if recs[0].subject != "dlq.fault" {
		t.Fatalf("subject %s", recs[0].subject)
	}
	checks := map[string]bool{
		"reason":         r.Reason == dlq.ReasonPermanent,
		"task_id":        r.TaskID == "p1",
		"node_id":        r.NodeID == "node-7",
		"node_type":      r.NodeType == "fault",
		"correlation_id": r.CorrelationID == "run-3",
		"error_kind":     r.ErrorKind == "Manifest",
		"error":          r.Error == "width must be positive",
		"causes":         len(r.Causes) >= 1 && r.Causes[len(r.Causes)-1] == "width must be positive",
		"attempts":       r.Attempts == 1,
		"deliveries":     r.Deliveries == 1,
		"failure times":  !r.FirstFailure.IsZero() && !r.LastFailure.Before(r.FirstFailure) && time.Since(r.LastFailure) < time.Minute,
		"worker":         strings.Contains(r.Worker, "/"),
		"subject":        r.Subject == "tasks.fault",
		"stream":         r.Stream == e.names.TaskStream && r.Sequence == 1,
		"nodeq_version":  r.NodeqVersion != "",
		"headers":        len(r.Headers["X-Trace"]) == 1 && r.Headers["X-Trace"][0] == "abc" && r.Headers["Nats-Msg-Id"][0] == "p1",
		"data":           string(r.Data) == string(msg.Data),
		"no stack":       r.Stack == "",
	}
	for field, ok := range checks {
		if !ok {
			t.Errorf("record field %s wrong: %+v", field, r)
		}
	}
}

// TestRetriesExhausted: transient failures through every attempt of every
// delivery end in one "retries exhausted" record with the counts right.
func TestRetriesExhausted(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	e.start(faultRegistry(j, nil), runnerOpts{retry: resilience.Fixed(10*time.Millisecond, 3),
		redelivery: resilience.Redelivery{MaxDeliveries: 2, Backoff: []time.Duration{100 * time.Millisecond}}})
	e.publish(&task.Envelope{ID: "x1", NodeType: "fault", Params: task.Params{"kind": "Io", "message": "disk gone"}})
	eventually(t, 10*time.Second, "the record", func() bool {
		return e.streamMsgs(e.names.DLQStream) == 1 && e.streamMsgs(e.names.TaskStream) == 0
	})
	runs := j.of("x1")
	if len(runs) != 6 {
		t.Fatalf("%d runs, want 3 attempts x 2 deliveries", len(runs))
	}
	if runs[2].attempt != (executor.Attempt{Number: 3, Delivery: 1}) || runs[3].attempt != (executor.Attempt{Number: 1, Delivery: 2}) {
		t.Fatalf("attempts %+v %+v", runs[2].attempt, runs[3].attempt)
	}
	if gap := runs[3].at.Sub(runs[2].at); gap < 100*time.Millisecond {
		t.Fatalf("redelivered after %v, before its 100ms backoff", gap)
	}
	r := e.records()[0].rec
	if r.Reason != dlq.ReasonExhausted || r.ErrorKind != "Io" || r.Attempts != 3 || r.Deliveries != 2 || r.Error != "disk gone" {
		t.Fatalf("record %+v", r)
	}
}

// TestPanicIsRecordedAndWorkerLivesOn: a panicking node leaves a record
// with its stack trace and the consumer keeps serving.
func TestPanicIsRecordedAndWorkerLivesOn(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	e.start(faultRegistry(j, nil), runnerOpts{workers: 1})
	e.publish(&task.Envelope{ID: "boom", NodeType: "fault", Params: task.Params{"panic": "true", "message": "nil map"}},
		&task.Envelope{ID: "fine", NodeType: "echo"})
	eventually(t, 10*time.Second, "both tasks to settle", func() bool {
		return e.streamMsgs(e.names.DLQStream) == 1 && e.streamMsgs(e.names.TaskStream) == 0
	})
	if runs := j.of("fine"); len(runs) != 1 || runs[0].err != nil {
		t.Fatalf("the task after the panic: %+v", runs)
	}
	if runs := j.of("boom"); len(runs) != 1 {
		t.Fatalf("a panic is permanent, ran %d times", len(runs))
	}
	r := e.records()[0].rec
	if r.TaskID != "boom" || r.ErrorKind != "Other" || !strings.Contains(r.Error, "nil map") || !strings.Contains(r.Stack, "(*fault).execute") {
		t.Fatalf("record %+v\nstack:\n%s", r, r.Stack)
	}
}

// TestBreakerPausesSubscription: consecutive exhausted failures open the
// breaker; while open nothing is pulled; after the cooldown exactly one
// probe runs, and its success resumes pulling. No task is charged for it.
func TestBreakerPausesSubscription(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	var down atomic.Bool
	down.Store(true)
	var transitions []string
	var tmu sync.Mutex
	b := resilience.NewBreaker(resilience.BreakerSettings{Name: "test", Cooldown: 4 * time.Second,
		OnStateChange: func(_ string, from, to resilience.State) {
			tmu.Lock()
			transitions = append(transitions, to.String())
			tmu.Unlock()
		}})
	downstream := executor.Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		if down.Load() {
			return nil, resilience.Errorf(resilience.Transport, "downstream unreachable")
		}
		return []byte("ok"), nil
	})
	j := &journal{}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "call", Executor: j.wrap(downstream, b)})
	e.start(reg, runnerOpts{workers: 8, breaker: b, retry: resilience.None(),
		redelivery: resilience.Redelivery{MaxDeliveries: 100, Backoff: []time.Duration{100 * time.Millisecond}}})

	var first []*task.Envelope
	for i := range 5 {
		first = append(first, &task.Envelope{ID: fmt.Sprintf("a-%d", i), NodeType: "call"})
	}
	e.publish(first...)
	eventually(t, 10*time.Second, "the breaker to open", func() bool { return b.State() == resilience.StateOpen })
	// A pull request already waiting when it opened may still deliver (the
	// reaction is bounded by one pull); after one expiry nothing is pulled.
	time.Sleep(pullWait + 100*time.Millisecond)
	ci, _ := e.cons.Info(context.Background())
	deliveredAtOpen, runsAtOpen := ci.Delivered.Consumer, len(j.all())

	var second []*task.Envelope
	for i := range 10 {
		second = append(second, &task.Envelope{ID: fmt.Sprintf("b-%d", i), NodeType: "call"})
	}
	e.publish(second...)
	time.Sleep(time.Second) // well inside the 4s cooldown
	if b.State() != resilience.StateOpen {
		t.Fatalf("breaker %v before its cooldown ended", b.State())
	}
	ci, _ = e.cons.Info(context.Background())
	if ci.Delivered.Consumer != deliveredAtOpen || len(j.all()) != runsAtOpen {
		t.Fatalf("pulled or ran while open: delivered %d -> %d, runs %d -> %d", deliveredAtOpen, ci.Delivered.Consumer, runsAtOpen, len(j.all()))
	}
	if ci.NumPending < 10 {
		t.Fatalf("only %d tasks pending in the stream; the new tasks must wait there", ci.NumPending)
	}

	down.Store(false) // the downstream recovers; the next probe succeeds
	eventually(t, 20*time.Second, "every task to complete", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	if d := e.streamMsgs(e.names.DLQStream); d != 0 {
		t.Fatalf("%d tasks dead-lettered", d)
	}
	halfOpenRuns := 0
	succeeded := map[string]int{}
	for _, r := range j.all() {
		if r.state == resilience.StateOpen {
			t.Fatalf("task %s ran while the breaker was open", r.id)
		}
		if r.state == resilience.StateHalfOpen {
			halfOpenRuns++
		}
		if r.err == nil {
			succeeded[r.id]++
		}
	}
	if halfOpenRuns != 1 {
		t.Fatalf("%d runs while half-open, want exactly one probe", halfOpenRuns)
	}
	for _, env := range append(first, second...) {
		if succeeded[env.ID] != 1 {
			t.Fatalf("task %s succeeded %d times", env.ID, succeeded[env.ID])
		}
	}
	for _, env := range second {
		if runs := j.of(env.ID); len(runs) != 1 || runs[0].attempt.Delivery != 1 {
			t.Fatalf("task %s published while open bounced: %+v", env.ID, runs)
		}
	}
	tmu.Lock()
	defer tmu.Unlock()
	if got := strings.Join(transitions, ","); got != "open,half-open,closed" {
		t.Fatalf("transitions %s", got)
	}
}

// TestBreakerFailureRateOpens: a downstream failing every other call never
// makes 5 failures in a row, so only the failure-rate condition, configured
// in YAML, can open the breaker; once open, nothing more is pulled.
func TestBreakerFailureRateOpens(t *testing.T) {
	cfg, err := config.Parse("rate.yaml", []byte("breaker:\n  failure_threshold: 5\n  failure_rate: 0.5\n  min_requests: 10\n  window: 1m\n  cooldown: 5s\n"))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := cfg.BreakerSettings()
	var opened atomic.Int32
	bs.Name, bs.OnStateChange = "rate", func(_ string, _, to resilience.State) {
		if to == resilience.StateOpen {
			opened.Add(1)
		}
	}
	b := resilience.NewBreaker(bs)

	e := newEnv(t, queue.StreamOptions{})
	var healthy atomic.Bool
	var calls atomic.Int64
	downstream := executor.Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		if calls.Add(1)%2 == 0 && !healthy.Load() {
			return nil, resilience.Errorf(resilience.Transport, "downstream dropped the call")
		}
		return []byte("ok"), nil
	})
	j := &journal{}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "call", Executor: j.wrap(downstream, b)})
	// One worker runs the tasks in order; one attempt and one delivery make
	// every failure final, so each one counts against the breaker at once.
	e.start(reg, runnerOpts{workers: 1, breaker: b, retry: resilience.None(), redelivery: resilience.Redelivery{MaxDeliveries: 1}})

	var envs []*task.Envelope
	for i := range 40 {
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("r-%02d", i), NodeType: "call"})
	}
	e.publish(envs...)
	eventually(t, 10*time.Second, "the breaker to open on the failure rate", func() bool { return b.State() == resilience.StateOpen })
	time.Sleep(pullWait + 100*time.Millisecond)
	runsAtOpen := len(j.all())
	// Calls 2, 4, ... fail: at the 10th outcome, the 5th failure, the rate
	// reaches 0.5 with the 10 outcomes it needs.
	if runsAtOpen != 10 {
		t.Fatalf("%d runs when the breaker opened, want 10", runsAtOpen)
	}
	time.Sleep(time.Second) // well inside the 5s cooldown
	if n := len(j.all()); n != runsAtOpen || b.State() != resilience.StateOpen {
		t.Fatalf("ran %d tasks while open (state %v)", n-runsAtOpen, b.State())
	}
	// Those prefetched were handed back: every task not run is in the stream.
	if n := e.streamMsgs(e.names.TaskStream); n != uint64(len(envs)-runsAtOpen) {
		t.Fatalf("%d tasks in the stream, want the %d not yet run", n, len(envs)-runsAtOpen)
	}

	healthy.Store(true)
	eventually(t, 20*time.Second, "every task to finish", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	if d := e.streamMsgs(e.names.DLQStream); d != 5 {
		t.Fatalf("%d dead letters, want the 5 failed calls", d)
	}
	if opened.Load() != 1 || b.State() != resilience.StateClosed {
		t.Fatalf("opened %d times, state %v", opened.Load(), b.State())
	}
}

// TestOwnStreamIsolatesBreaker: a node type given its own task stream,
// prefix and durable consumer (docs/resilience.md) has its own breaker. Its
// downstream failing pauses only it; the other node types keep running, and
// both deployments share one dead-letter stream.
func TestOwnStreamIsolatesBreaker(t *testing.T) {
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv)
	shared := setupEnv(t, srv, nc, js, queue.StreamOptions{}, queue.ConsumerOptions{})
	own := setupEnvNamed(t, srv, nc, js, queue.Names{TaskStream: "NODEQ_TASKS_RESIZE", TaskPrefix: "tasks-resize", Consumer: "nodeq-resize"},
		queue.StreamOptions{}, queue.ConsumerOptions{})

	final := runnerOpts{workers: 2, retry: resilience.None(), redelivery: resilience.Redelivery{MaxDeliveries: 1}}
	sharedBreaker := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(2)})
	ownBreaker := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(2)})
	c := newCounter()
	sharedReg, ownReg := executor.NewRegistry(), executor.NewRegistry()
	_ = sharedReg.Register(executor.Node{Type: "echo", Executor: c.wrap(executor.Echo())})
	_ = ownReg.Register(executor.Node{Type: "resize", Executor: c.wrap(executor.Func(func(context.Context, *task.Envelope) ([]byte, error) {
		return nil, resilience.Errorf(resilience.Transport, "image service down")
	}))})
	so, oo := final, final
	so.breaker, oo.breaker = sharedBreaker, ownBreaker
	oo.workers = 1 // in order: the two failures that open the breaker, then nothing
	shared.start(sharedReg, so)
	own.start(ownReg, oo)

	for i := range 10 {
		own.publish(&task.Envelope{ID: fmt.Sprintf("resize-%d", i), NodeType: "resize"})
	}
	eventually(t, 10*time.Second, "the resize breaker to open", func() bool { return ownBreaker.State() == resilience.StateOpen })
	var echoes []*task.Envelope
	for i := range 50 {
		echoes = append(echoes, &task.Envelope{ID: fmt.Sprintf("echo-%d", i), NodeType: "echo"})
	}
	shared.publish(echoes...)
	eventually(t, 10*time.Second, "every echo task to run", func() bool { return shared.streamMsgs(shared.names.TaskStream) == 0 })
	for _, e := range echoes {
		if n := c.snapshot()[e.ID]; n != 1 {
			t.Fatalf("%s ran %d times", e.ID, n)
		}
	}
	if sharedBreaker.State() != resilience.StateClosed || ownBreaker.State() != resilience.StateOpen {
		t.Fatalf("breakers: echo %v, resize %v", sharedBreaker.State(), ownBreaker.State())
	}
	ranResize := 0
	for id, n := range c.snapshot() {
		if strings.HasPrefix(id, "resize-") {
			ranResize += n
		}
	}
	// Two failures opened it; the next task, already pulled, is held by the
	// worker, not run. It and the rest wait in their own stream.
	if ranResize != 2 {
		t.Fatalf("%d resize runs, want the 2 that opened the breaker", ranResize)
	}
	if n := own.streamMsgs(own.names.TaskStream); n != 8 {
		t.Fatalf("%d resize tasks in their stream, want 8", n)
	}
	recs := shared.records()
	if len(recs) != 2 {
		t.Fatalf("%d dead letters in the shared stream, want 2", len(recs))
	}
	for _, r := range recs {
		if r.subject != "dlq.resize" || r.rec.Subject != "tasks-resize.resize" || r.rec.Stream != "NODEQ_TASKS_RESIZE" {
			t.Fatalf("record on %s for %s in %s", r.subject, r.rec.Subject, r.rec.Stream)
		}
	}
}

// TestAccountingUnderRandomFaults: every task of a mixed faulty load ends
// either succeeded or dead-lettered, never both, never neither.
func TestAccountingUnderRandomFaults(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	b := resilience.NewBreaker(resilience.BreakerSettings{Cooldown: 100 * time.Millisecond, MaxCooldown: 400 * time.Millisecond})
	e.start(faultRegistry(j, b), runnerOpts{workers: 8, breaker: b, retry: resilience.Fixed(time.Millisecond, 3),
		redelivery: resilience.Redelivery{MaxDeliveries: 2, Backoff: []time.Duration{20 * time.Millisecond}}})

	const n = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	var envs []*task.Envelope
	for i := range n {
		p := task.Params{}
		switch x := rng.IntN(100); {
		case x < 40: // healthy
			p["probability"] = 0
		case x < 60: // one transient failure, fixed by an in-process retry
			p["kind"], p["times"] = "Transport", 1
		case x < 70: // five: needs the second delivery
			p["kind"], p["times"] = "Execution", 5
		case x < 85: // permanent
			p["kind"] = "Marshaling"
		case x < 95: // more than 2 deliveries x 3 attempts
			p["kind"], p["times"] = "Io", 10
		default:
			p["panic"] = "true"
		}
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("m-%04d", i), NodeType: "fault", Params: p})
	}
	e.publish(envs...)
	eventually(t, 60*time.Second, "the load to settle", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })

	succeeded := map[string]int{}
	for _, r := range j.all() {
		if r.err == nil {
			succeeded[r.id]++
		}
	}
	dead := map[string]int{}
	for _, r := range e.records() {
		dead[r.rec.TaskID]++
	}
	both, neither, twice := 0, 0, 0
	for _, env := range envs {
		s, d := succeeded[env.ID], dead[env.ID]
		switch {
		case s > 0 && d > 0:
			both++
		case s == 0 && d == 0:
			neither++
		case s > 1 || d > 1:
			twice++
		}
	}
	t.Logf("published %d, succeeded %d, dead-lettered %d (both %d, neither %d, twice %d)", n, len(succeeded), len(dead), both, neither, twice)
	if len(succeeded)+len(dead) != n || both+neither+twice != 0 {
		t.Fatalf("accounting broken: published %d != succeeded %d + dead-lettered %d", n, len(succeeded), len(dead))
	}
	if len(dead) == 0 || len(succeeded) == 0 {
		t.Fatal("the load did not exercise both outcomes")
	}
}

// TestBackoffStopsAtShutdown: a task sleeping between attempts does not hold
// up a shutdown; it is handed back for later, not dead-lettered.
func TestBackoffStopsAtShutdown(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	r := e.start(faultRegistry(j, nil), runnerOpts{retry: resilience.Fixed(20*time.Second, 2), shutdownTimeout: 30 * time.Second})
	e.publish(&task.Envelope{ID: "s1", NodeType: "fault", Params: task.Params{"kind": "Transport", "times": 1}})
	eventually(t, 10*time.Second, "the first attempt", func() bool { return len(j.of("s1")) == 1 })
	start := time.Now()
	if !r.stop() {
		t.Fatal("shutdown reported unfinished work")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown waited %v for a 20s backoff", took)
	}
	if m, d := e.streamMsgs(e.names.TaskStream), e.streamMsgs(e.names.DLQStream); m != 1 || d != 0 {
		t.Fatalf("task stream %d, dead letters %d; the task must stay queued", m, d)
	}
}

// TestLongRunKeepsTheTask: a node running for several AckWaits is not
// redelivered to another worker meanwhile, because the worker signals progress.
func TestLongRunKeepsTheTask(t *testing.T) {
	e := newEnvWith(t, queue.StreamOptions{}, queue.ConsumerOptions{AckWait: time.Second})
	j := &journal{}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "sleep", Executor: j.wrap(executor.Sleep(time.Minute), nil)})
	e.start(reg, runnerOpts{workers: 2, ackWait: time.Second})
	e.publish(&task.Envelope{ID: "long", NodeType: "sleep", Params: task.Params{"duration": "3500ms"}})
	eventually(t, 15*time.Second, "the long task to finish", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	if runs := j.of("long"); len(runs) != 1 || runs[0].err != nil {
		t.Fatalf("long task ran %d times: %+v", len(runs), runs)
	}
	ci, _ := e.cons.Info(context.Background())
	if ci.NumRedelivered != 0 || ci.Delivered.Consumer != 1 {
		t.Fatalf("redelivered %d, delivered %d", ci.NumRedelivered, ci.Delivered.Consumer)
	}
}
