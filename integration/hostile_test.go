package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// hostileCase is one task a hostile or careless producer publishes, and
// the one outcome it may have: a dead-letter record of its own.
type hostileCase struct {
	name    string
	msg     natsMsg
	reason  string // the record's reason
	errText string // in the record's error
	taskID  string // the record's task id, when set
}

// TestHostileTasksHarmOnlyThemselves publishes tasks built to harm other
// tasks, the fleet, the breaker or an operator, among good tasks. Each
// hostile task must end as a dead-letter record of its own and nothing
// else: no stream purged, no record forged, no consumer unpaused, no
// connection closed, no breaker opened, no metric series per producer
// whim; every good task runs once.
func TestHostileTasksHarmOnlyThemselves(t *testing.T) {
	maxTask := dlq.MaxTaskSize(1 << 20) // the embedded server's default max_payload
	e := newEnv(t, queue.StreamOptions{MaxMsgSize: int32(maxTask)})
	ctx := context.Background()

	// A consumer of another application, paused by its operator.
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateConsumer(ctx, "OTHER", jetstream.ConsumerConfig{Durable: "c"}); err != nil {
		t.Fatal(err)
	}
	pausedUntil := time.Now().Add(time.Hour)
	if _, err := e.js.PauseConsumer(ctx, "OTHER", "c", pausedUntil); err != nil {
		t.Fatal(err)
	}

	// A downstream behind an http node; a breaker that one failure opens.
	var downstreamCalls atomic.Int64
	downstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downstreamCalls.Add(1)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(downstream.Close)
	hook, err := executor.HTTP(executor.HTTPConfig{URL: downstream.URL})
	if err != nil {
		t.Fatal(err)
	}
	c := newCounter()
	reg := executor.NewRegistry()
	for _, n := range []executor.Node{
		{Type: "echo", Executor: c.wrap(executor.Echo())},
		{Type: "fault", Executor: c.wrap(executor.Fault())},
		{Type: "hook", Executor: c.wrap(hook), Timeout: 5 * time.Second},
		// A node whose output cannot be sent back in one message.
		{Type: "big", Executor: c.wrap(executor.Func(func(context.Context, *task.Envelope) ([]byte, error) {
			return bytes.Repeat([]byte("o"), 2<<20), nil
		}))},
	} {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	breaker := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(1), Cooldown: time.Hour})
	promReg := prometheus.NewRegistry()

	// Results to inboxes, as waiting producers would get them.
	results := map[string]*task.Result{}
	var resultsMu sync.Mutex
	sub, err := e.nc.Subscribe("_INBOX.hostile.>", func(m *nats.Msg) {
		r, err := task.DecodeResult(m.Data, m.Header.Get("Content-Type"))
		if err != nil {
			t.Errorf("result on %s: %v", m.Subject, err)
			return
		}
		resultsMu.Lock()
		results[m.Subject] = r
		resultsMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	pub := queue.NewPublisher(e.js, e.names)
	publishGood := func(prefix string) []string {
		var ids []string
		for i := range 20 {
			id := fmt.Sprintf("%s-%d", prefix, i)
			nodeType := "echo"
			if i%4 == 0 {
				nodeType = "hook"
			}
			if _, err := pub.Publish(ctx, &task.Envelope{ID: id, NodeType: nodeType, Payload: []byte("p")}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	good := publishGood("before") // pending while the hostile tasks run

	// Keys in sorted order, so that a decode error comes after the fields before it.
	env := func(fields map[string]any) string {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.SetSortMapKeys(true)
		if err := enc.Encode(fields); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	// The largest task the stream accepts, failing with an error larger
	// than any record keeps, and a header that must not be kept.
	largest := func() natsMsg {
		m := natsMsg{subject: "tasks.fault", headers: map[string]string{"Authorization": "Bearer s3cret", "X-Pad": "x"}}
		base := env(map[string]any{"id": "largest", "node_type": "fault", "params": map[string]any{"kind": "Manifest", "message": ""}})
		size := func(m natsMsg) int { msg := newMsg(&m); return len(msg.Data) + headerLen(msg.Header) }
		m.data = base
		pad := int(maxTask) - size(m) - 4 // the message string grows from fixstr to str32
		m.data = env(map[string]any{"id": "largest", "node_type": "fault", "params": map[string]any{"kind": "Manifest", "message": strings.Repeat("m", pad)}})
		if got := size(m); got != int(maxTask) {
			t.Fatalf("largest task is %d bytes, want %d", got, maxTask)
		}
		return m
	}()
	cases := []hostileCase{
		{"reply_to purges the dead-letter stream", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h1", "node_type": "echo", "reply_to": "$JS.API.STREAM.PURGE.NODEQ_DLQ"})}, dlq.ReasonInvalid, "server subject", "h1"},
		{"reply_to purges the task stream", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h2", "node_type": "echo", "reply_to": "$JS.API.STREAM.PURGE.NODEQ_TASKS"})}, dlq.ReasonInvalid, "server subject", "h2"},
		{"reply_to unpauses a consumer", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h3", "node_type": "echo", "reply_to": "$JS.API.CONSUMER.PAUSE.OTHER.c"})}, dlq.ReasonInvalid, "server subject", "h3"},
		{"reply_to forges a dead letter", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h4", "node_type": "echo", "reply_to": "dlq.echo"})}, dlq.ReasonInvalid, "dead-letter or consumer inbox subjects", "h4"},
		{"reply_to publishes a task", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h5", "node_type": "echo", "reply_to": "tasks.echo"})}, dlq.ReasonInvalid, "task, dead-letter", "h5"},
		{"reply_to past the control line", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h6", "node_type": "echo", "reply_to": "_INBOX." + strings.Repeat("a", 5000)})}, dlq.ReasonInvalid, "the limit is 256", "h6"},
		{"reply_to wildcard", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h7", "node_type": "echo", "reply_to": "_INBOX.>"})}, dlq.ReasonInvalid, "not a literal", "h7"},
		{"reply_to another application", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h8", "node_type": "echo", "reply_to": "orders.created"})}, dlq.ReasonInvalid, "outside the allowed", "h8"},
		{"reply_to with CRLF", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h9", "node_type": "echo", "reply_to": "_INBOX.a\r\nPUB tasks.echo 1"})}, dlq.ReasonInvalid, "printable ASCII", "h9"},
		{"escape sequence in an http task's id", natsMsg{subject: "tasks.hook", data: env(map[string]any{"id": "h10\x1b[2J", "node_type": "hook"})}, dlq.ReasonInvalid, "control character", ""},
		{"header injection in an http task's node id", natsMsg{subject: "tasks.hook", data: env(map[string]any{"id": "h11", "node_id": "n\r\nX-Evil: 1", "node_type": "hook"})}, dlq.ReasonInvalid, "field node_id", "h11"},
		{"huge correlation id", natsMsg{subject: "tasks.hook", data: env(map[string]any{"id": "h12", "correlation_id": strings.Repeat("c", 200_000), "node_type": "hook"})}, dlq.ReasonInvalid, "the limit is 256", "h12"},
		{"bidi override in an id", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h13\u202egpj.exe", "node_type": "echo"})}, dlq.ReasonInvalid, "U+202E", ""},
		{"json id with invalid UTF-8", natsMsg{subject: "tasks.echo", data: "{\"id\":\"\xff\xfe\",\"node_type\":\"echo\"}", ct: "application/json"}, dlq.ReasonInvalid, "not valid UTF-8", ""},
		{"json key in another case", natsMsg{subject: "tasks.echo", data: `{"id":"h15","Node_Type":"echo","node_type":"echo"}`, ct: "application/json"}, dlq.ReasonInvalid, "case-sensitive", "h15"},
		{"json duplicate key", natsMsg{subject: "tasks.echo", data: `{"id":"h16","node_type":"echo","id":"other"}`, ct: "application/json"}, dlq.ReasonInvalid, "given twice", "h16"},
		{"decode failure still answers its waiter", natsMsg{subject: "tasks.echo", data: env(map[string]any{"id": "h17", "node_type": "echo", "reply_to": "_INBOX.hostile.h17", "v": "one"})}, dlq.ReasonInvalid, "field v", "h17"},
		{"unreadable body named by its message id", natsMsg{subject: "tasks.echo", data: "\xc1", headers: map[string]string{"Nats-Msg-Id": "h18"}}, dlq.ReasonInvalid, "malformed msgpack", "h18"},
		{"result too large for its waiter", natsMsg{subject: "tasks.big", data: env(map[string]any{"id": "h19", "node_type": "big", "reply_to": "_INBOX.hostile.h19"})}, dlq.ReasonPermanent, "more than the", "h19"},
		{"unknown node type", natsMsg{subject: "tasks.nope", data: env(map[string]any{"id": "h20", "node_type": "nope"})}, dlq.ReasonUnknownNodeType, "unknown node type", "h20"},
		{"largest task with a huge error and credentials", largest, dlq.ReasonPermanent, "bytes cut", "largest"},
	}
	for i := range cases {
		e.publishRaw(&cases[i].msg)
	}
	// Many node types nobody runs: one metric series, not one each.
	for i := range 30 {
		e.publishRaw(&natsMsg{subject: fmt.Sprintf("tasks.junk%d", i), data: env(map[string]any{"id": fmt.Sprintf("junk-%d", i), "node_type": fmt.Sprintf("junk%d", i)})})
	}
	deadLettered := len(cases) + 30
	// One byte over the limit: the task stream refuses it, so the producer
	// knows at once, and it is not "published".
	over := largest
	over.headers = map[string]string{"Authorization": "Bearer s3cret", "X-Pad": "xx"}
	if _, err := e.js.PublishMsg(ctx, newMsg(&over)); err == nil {
		t.Fatal("the task stream accepted a task over its limit")
	}

	e.start(reg, runnerOpts{workers: 4, breaker: breaker, metrics: metrics.New(promReg)})
	good = append(good, publishGood("after")...) // published while the consumer runs
	eventually(t, 30*time.Second, "every task to reach an outcome", func() bool {
		return e.streamMsgs(e.names.TaskStream) == 0 && int(e.streamMsgs(e.names.DLQStream)) >= deadLettered
	})

	// Each hostile task: exactly its own record, byte for byte.
	recs := e.records()
	if len(recs) != deadLettered {
		t.Errorf("%d dead-letter records for %d hostile tasks: a record was forged or purged", len(recs), deadLettered)
	}
	byData := map[string]*dlqMsg{}
	for _, r := range recs {
		byData[string(r.rec.Data)] = r
	}
	for _, hc := range cases {
		t.Run(hc.name, func(t *testing.T) {
			r := byData[hc.msg.data]
			if r == nil {
				t.Fatal("no record with the task's bytes")
			}
			if r.rec.Reason != hc.reason || !strings.Contains(r.rec.Error, hc.errText) {
				t.Fatalf("reason %q error %.300q; want %q with %q", r.rec.Reason, r.rec.Error, hc.reason, hc.errText)
			}
			if hc.taskID != "" && r.rec.TaskID != hc.taskID {
				t.Fatalf("record task id %q, want %q", r.rec.TaskID, hc.taskID)
			}
			if task.CheckID(r.rec.TaskID) != nil || task.CheckID(r.header.Get(dlq.HeaderTaskID)) != nil {
				t.Fatalf("record carries an unsound task id %q", r.rec.TaskID)
			}
		})
	}
	if r := byData[largest.data]; r != nil {
		if got := r.rec.Headers["Authorization"]; len(got) != 1 || got[0] != dlq.Masked {
			t.Errorf("Authorization kept as %q", got)
		}
		if len(r.rec.Error) > dlq.MaxErrorLen {
			t.Errorf("record error of %d bytes", len(r.rec.Error))
		}
	}

	// Waiters hear about their own tasks' failures.
	resultsMu.Lock()
	for _, subj := range []string{"_INBOX.hostile.h17", "_INBOX.hostile.h19"} {
		if r := results[subj]; r == nil || r.OK || r.Error == "" {
			t.Errorf("result on %s: %+v, want a failure", subj, r)
		}
	}
	if r := results["_INBOX.hostile.h19"]; r != nil && r.ErrorKind != "Serialization" {
		t.Errorf("too-large result reported as %s", r.ErrorKind)
	}
	resultsMu.Unlock()

	// Nobody else was harmed.
	runs := c.snapshot()
	succeeded := 0
	for _, id := range good {
		if runs[id] != 1 {
			t.Errorf("good task %s ran %d times", id, runs[id])
		} else {
			succeeded++
		}
	}
	if got, want := downstreamCalls.Load(), int64(10); got != want {
		t.Errorf("the downstream was called %d times, want %d (the good hook tasks only)", got, want)
	}
	if s := breaker.State(); s != resilience.StateClosed {
		t.Errorf("breaker %v: a hostile task counted as a downstream failure", s)
	}
	if !e.nc.IsConnected() {
		t.Error("the consumer's connection was closed")
	}
	if ci, err := e.js.Consumer(ctx, "OTHER", "c"); err != nil || !ci.CachedInfo().Paused {
		t.Errorf("another application's paused consumer was resumed (err %v)", err)
	}
	labels := map[string]bool{}
	mfs, _ := promReg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "node_type" {
					labels[l.GetValue()] = true
				}
			}
		}
	}
	for l := range labels {
		switch l {
		case "echo", "hook", "fault", "big", metrics.UnknownNodeType, queue.InvalidNodeType:
		default:
			t.Errorf("metric label node_type=%q: producers can create series", l)
		}
	}
	published := len(good) + len(cases) + 30
	lost := published - succeeded - len(recs)
	t.Logf("published %d, succeeded %d, dead-lettered %d, lost %d", published, succeeded, len(recs), lost)
	if lost != 0 {
		t.Fatalf("lost %d", lost)
	}
}

// headerLen is a header's size on the wire, as the server counts it.
func headerLen(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// TestReplayRefusesForgedRecords writes records by hand on the dead-letter
// subjects, as anyone allowed to publish there could, naming subjects that
// would purge the task stream or publish elsewhere. Replay, and its dry
// run, must refuse them and republish only on the task subject the record
// is stored under.
func TestReplayRefusesForgedRecords(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	ctx := context.Background()
	pub := queue.NewPublisher(e.js, e.names)
	for i := range 5 {
		if _, err := pub.Publish(ctx, &task.Envelope{ID: fmt.Sprintf("pending-%d", i), NodeType: "echo"}); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := task.EncodeMsgpack(&task.Envelope{ID: "legit", NodeType: "echo"})
	write := func(subject string, r *dlq.Record) {
		t.Helper()
		r.Reason, r.ErrorKind, r.Error, r.Stream, r.Data = dlq.ReasonPermanent, "Manifest", "boom", e.names.TaskStream, good
		data, err := dlq.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	write("dlq.echo", &dlq.Record{NodeType: "echo", Subject: "$JS.API.STREAM.PURGE.NODEQ_TASKS", Sequence: 1})
	write("dlq.echo", &dlq.Record{NodeType: "echo", Subject: "dlq.echo", Sequence: 2})
	write("dlq.echo", &dlq.Record{NodeType: "other", Subject: "tasks.other", Sequence: 3})
	write("dlq._invalid", &dlq.Record{NodeType: "_invalid", Subject: "tasks.a.b", Sequence: 4})
	write("dlq.echo", &dlq.Record{NodeType: "echo", Subject: "tasks.echo", Sequence: 5, Headers: map[string][]string{
		"X-Trace": {"t1"}, "Authorization": {dlq.Masked}, "Nats-Expected-Last-Sequence": {"999999"}, "Nats-Msg-Id": {"legit"}}})
	st := dlq.NewStore(e.js, e.names.DLQStream, e.names.DLQPrefix)

	dry, err := st.Replay(ctx, &dlq.Filter{}, dlq.ReplayOptions{DryRun: true})
	if err != nil || dry.Replayed != 1 || dry.Refused != 4 {
		t.Fatalf("dry run: %+v, %v; want 1 to replay and 4 refused", dry, err)
	}
	if _, err := st.Replay(ctx, &dlq.Filter{}, dlq.ReplayOptions{To: "$JS.API.STREAM.PURGE.NODEQ_TASKS"}); err == nil {
		t.Fatal("replay --to a server subject was accepted")
	}
	sum, err := st.Replay(ctx, &dlq.Filter{}, dlq.ReplayOptions{})
	if err != nil || sum.Replayed != 1 || sum.Refused != 4 || sum.Failed != 0 {
		t.Fatalf("replay: %+v, %v", sum, err)
	}
	for _, msg := range sum.Errors {
		if !strings.Contains(msg, "refused") {
			t.Errorf("error without the reason: %s", msg)
		}
	}
	if n := e.streamMsgs(e.names.TaskStream); n != 6 {
		t.Fatalf("task stream holds %d, want the 5 pending and the 1 replayed", n)
	}
	if n := e.streamMsgs(e.names.DLQStream); n != 4 {
		t.Fatalf("dead-letter stream holds %d, want the 4 refused records kept", n)
	}
	s, err := e.js.Stream(ctx, e.names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "tasks.echo")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("X-Trace") != "t1" || m.Header.Get("Authorization") != "" || m.Header.Get("Nats-Expected-Last-Sequence") != "" ||
		!bytes.Equal(m.Data, good) {
		t.Fatalf("replayed task: headers %v, data %q", m.Header, m.Data)
	}
	// The operator's own destination must be a task subject, of the task's
	// own node type (its envelope names it: elsewhere it would be
	// dead-lettered again at once).
	other, err := st.Replay(ctx, &dlq.Filter{NodeTypes: []string{"echo"}}, dlq.ReplayOptions{To: "tasks.other"})
	if err != nil || other.Replayed != 0 || other.Refused != 2 { // the two forged echo records
		t.Fatalf("replay --to tasks.other: %+v, %v", other, err)
	}
	own, err := st.Replay(ctx, &dlq.Filter{NodeTypes: []string{"echo"}}, dlq.ReplayOptions{To: "tasks.echo"})
	if err != nil || own.Replayed != 2 { // the same two, to the task subject of their node type
		t.Fatalf("replay --to tasks.echo: %+v, %v", own, err)
	}
	t.Logf("published 5 pending + 1 replayed + 2 sent on --to; refused 4 then 2; the task stream holds %d", e.streamMsgs(e.names.TaskStream))
}

// TestForgedFleetBreakerEntryIsBounded writes the fleet breaker's shared
// entry by hand, as `nats kv put` would: one naming the year 2100 may keep
// the fleet's breakers open no longer than their own longest cooldown, and
// one with an unknown state is ignored.
func TestForgedFleetBreakerEntryIsBounded(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	ctx := context.Background()
	b := resilience.NewBreaker(resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 2 * time.Second})
	fb, err := fleet.NewBreaker(ctx, e.js, e.names, "test/1", b, fleet.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := fb.Watch(wctx); err != nil {
		t.Fatal(err)
	}
	kv, err := e.js.KeyValue(ctx, fleet.BreakerBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, e.names.Consumer, []byte(`{"state":"opened-forever","until":"2100-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the watcher see it
	if s := b.State(); s != resilience.StateClosed {
		t.Fatalf("an entry with an unknown state moved the breaker to %v", s)
	}
	start := time.Now()
	if _, err := kv.Put(ctx, e.names.Consumer, []byte(`{"state":"open","until":"2100-01-01T00:00:00Z","trips":999999,"owner":"mallory"}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the forged open to reach the breaker", func() bool { return b.State() != resilience.StateClosed })
	// The probe may be claimed once MaxCooldown has passed since the entry was stored.
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	report, err := fb.Acquire(pctx)
	if err != nil {
		t.Fatalf("the breaker stayed open for %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	report(resilience.OutcomeSuccess)
	if s := b.State(); s != resilience.StateClosed {
		t.Fatalf("after a successful probe: %v", s)
	}
	t.Logf("a forged open until 2100 held the breaker for %v (max_cooldown 2s)", time.Since(start).Round(time.Millisecond))
}

// TestStatusLookalikeTasksAreDeadLettered publishes empty tasks carrying
// the Status headers the server uses for its own control messages. A
// client that tells tasks from statuses by content drops them unseen: they
// are redelivered forever and, in numbers, starve every other task. Each
// must be dead-lettered like any other unreadable task, and the good tasks
// among them must run.
func TestStatusLookalikeTasksAreDeadLettered(t *testing.T) {
	e := newEnvWith(t, queue.StreamOptions{}, queue.ConsumerOptions{MaxAckPending: 50})
	c := newCounter()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: c.wrap(executor.Echo())})
	statuses := []map[string]string{
		{"Status": "100"}, {"Status": "100", "Description": "FlowControl Request"}, {"Status": "404", "Description": "No Messages"},
		{"Status": "408", "Description": "Request Timeout"}, {"Status": "409", "Description": "Consumer Deleted"},
		{"Status": "409", "Description": "Leadership Change"}, {"Status": "503"},
	}
	const poison = 210 // more than max_ack_pending: enough to starve a client that never settles them
	pub := queue.NewPublisher(e.js, e.names)
	var good []string
	for i := range poison {
		e.publishRaw(&natsMsg{subject: "tasks.echo", headers: statuses[i%len(statuses)]})
		if i%10 == 0 {
			id := fmt.Sprintf("good-%d", i)
			if _, err := pub.Publish(context.Background(), &task.Envelope{ID: id, NodeType: "echo"}); err != nil {
				t.Fatal(err)
			}
			good = append(good, id)
		}
	}
	e.start(reg, runnerOpts{workers: 4})
	eventually(t, 30*time.Second, "every task to reach an outcome", func() bool {
		return e.streamMsgs(e.names.TaskStream) == 0 && e.streamMsgs(e.names.DLQStream) == poison
	})
	for _, r := range e.records() {
		if r.rec.Reason != dlq.ReasonInvalid || !strings.Contains(r.rec.Error, "empty message") || len(r.rec.Data) != 0 || r.rec.Headers["Status"] == nil {
			t.Fatalf("record %+v", r.rec)
		}
	}
	runs := c.snapshot()
	succeeded := 0
	for _, id := range good {
		if runs[id] == 1 {
			succeeded++
		}
	}
	published := poison + len(good)
	t.Logf("published %d, succeeded %d, dead-lettered %d, lost %d", published, succeeded, poison, published-succeeded-poison)
	if succeeded != len(good) {
		t.Fatalf("%d of %d good tasks ran once", succeeded, len(good))
	}
}

// TestPlantedRecordIDCannotSwallowARecord plants a record under the ID the
// next task's dead-letter record will have (dlq:<stream>:<seq> is
// predictable). The real record must still be stored; writing the same
// record twice still stores it once.
func TestPlantedRecordIDCannotSwallowARecord(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	ctx := context.Background()
	decoy := nats.NewMsg("dlq.echo")
	decoy.Data, _ = dlq.Encode(&dlq.Record{Reason: dlq.ReasonInvalid, NodeType: "echo", Stream: e.names.TaskStream, Sequence: 1, Data: []byte("decoy")})
	decoy.Header.Set(jetstream.MsgIDHeader, "dlq:"+e.names.TaskStream+":1")
	if _, err := e.js.PublishMsg(ctx, decoy); err != nil {
		t.Fatal(err)
	}
	e.publishRaw(&natsMsg{subject: "tasks.echo", data: "\xc1"}) // stream sequence 1, unreadable
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	e.start(reg, runnerOpts{})
	eventually(t, 10*time.Second, "the task to leave the task stream", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
	found := false
	for _, r := range e.records() {
		found = found || string(r.rec.Data) == "\xc1"
	}
	if !found {
		t.Fatal("the task was terminated but its record was swallowed by the planted one")
	}

	// A genuine duplicate (a terminate lost in transit, then a redelivery) is stored once.
	w := dlq.NewWriter(e.js, e.names.DLQPrefix)
	before := e.streamMsgs(e.names.DLQStream)
	for range 2 {
		if _, err := w.Write(ctx, &dlq.Record{Reason: dlq.ReasonInvalid, NodeType: "echo", Stream: e.names.TaskStream, Sequence: 99, Data: []byte("same")}); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.streamMsgs(e.names.DLQStream) - before; got != 1 {
		t.Fatalf("the same record written twice is stored %d times", got)
	}
	t.Logf("published 1, succeeded 0, dead-lettered 1, lost 0 (with a planted record under its ID)")
}
