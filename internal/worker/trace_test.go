package worker

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// fakeReplier records the results a worker publishes.
type fakeReplier struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (r *fakeReplier) PublishMsg(m *nats.Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *fakeReplier) MaxPayload() int64 { return 1 << 20 }

func (r *fakeReplier) only(t *testing.T) *nats.Msg {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) != 1 {
		t.Fatalf("%d results published; want 1", len(r.msgs))
	}
	return r.msgs[0]
}

// producer is a producer's sampled span context, as a traceparent carries it.
var producer = trace.NewSpanContext(trace.SpanContextConfig{
	TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35}, SpanID: trace.SpanID{0x00, 0xf0, 0x67, 0xaa}, TraceFlags: trace.FlagsSampled, Remote: true,
})

// tracedMsg is a task for node type "n" replying to _INBOX.r, carrying the
// producer's traceparent.
func tracedMsg(t *testing.T, id string) *fakeMsg {
	t.Helper()
	msg := newFakeMsg(t, &task.Envelope{ID: id, NodeID: "node-1", NodeType: "n", CorrelationID: "run-9", ReplyTo: "_INBOX.r"}, 1)
	tracing.Inject(trace.ContextWithSpanContext(context.Background(), producer), msg.header)
	return msg
}

// spanTree is the ended spans of one delivery, by name.
type spanTree map[string]sdktrace.ReadOnlySpan

func spansOf(t *testing.T, rec *tracetest.SpanRecorder) spanTree {
	t.Helper()
	tree := spanTree{}
	for _, s := range rec.Ended() {
		if _, dup := tree[s.Name()]; dup {
			t.Fatalf("two spans named %q", s.Name())
		}
		tree[s.Name()] = s
	}
	return tree
}

// get returns the span named name, failing when there is none.
func (tr spanTree) get(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	s, ok := tr[name]
	if !ok {
		t.Fatalf("no span %q among %v", name, tr.names())
	}
	return s
}

func (tr spanTree) names() []string {
	var out []string
	for n := range tr {
		out = append(out, n)
	}
	return out
}

// attr returns a span's attribute as text, "" when it has none.
func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// checkTree checks the shape every delivery has: a consumer span under the
// producer's, in its trace, with every other span its child, and the
// identifiers of the task; it returns the task span.
func checkTree(t *testing.T, tr spanTree, want ...string) sdktrace.ReadOnlySpan {
	t.Helper()
	if len(tr) != len(want)+1 {
		t.Fatalf("spans %v; want nodeq.task n and %v", tr.names(), want)
	}
	root := tr.get(t, "nodeq.task n")
	if root.SpanKind() != trace.SpanKindConsumer || root.Parent().SpanID() != producer.SpanID() || root.SpanContext().TraceID() != producer.TraceID() {
		t.Fatalf("task span kind %v, parent %v in trace %v; want a consumer span under the producer's %v", root.SpanKind(), root.Parent().SpanID(), root.SpanContext().TraceID(), producer.SpanID())
	}
	for key, value := range map[string]string{"messaging.system": "nats", "messaging.destination.name": "tasks.n", "messaging.consumer.group.name": "nodeq-workers",
		"nodeq.task_id": "t1", "nodeq.node_id": "node-1", "nodeq.node_type": "n", "messaging.message.conversation_id": "run-9", "nodeq.delivery": "1", "nodeq.stream_seq": "42"} {
		if got := attr(root, key); got != value {
			t.Errorf("task span %s = %q; want %q", key, got, value)
		}
	}
	for _, name := range want {
		if s := tr.get(t, name); s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("span %q is not the task span's child", name)
		}
	}
	return root
}

// checkResult checks that the result carries the task span's traceparent.
func checkResult(t *testing.T, r *fakeReplier, root sdktrace.ReadOnlySpan) {
	t.Helper()
	sc := tracing.SpanContext(r.only(t).Header)
	if sc.TraceID() != producer.TraceID() || sc.SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("result's trace context %v/%v; want the task span's %v/%v", sc.TraceID(), sc.SpanID(), producer.TraceID(), root.SpanContext().SpanID())
	}
}

func tracedWorker(rec *tracetest.SpanRecorder, o Options) *Worker {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	o.Tracer = tracing.Tracer(tp, "test")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return New(o)
}

// Success at the first attempt: the task span, one attempt, the settle
// step; the node's ctx carries the attempt's span.
func TestTraceSuccess(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	replies := &fakeReplier{}
	var nodeSpan trace.SpanContext
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "n", Executor: executor.Func(func(ctx context.Context, _ *task.Envelope) ([]byte, error) {
		nodeSpan = trace.SpanContextFromContext(ctx)
		return []byte("ok"), nil
	})})
	w := tracedWorker(rec, Options{Registry: reg, Replier: replies, Retry: resilience.None()})
	msg := tracedMsg(t, "t1")
	w.Handle(context.Background(), queue.Delivery{Msg: msg})
	if got := msg.settlement(); len(got) != 1 || got[0] != "ack" {
		t.Fatalf("settled %v", got)
	}
	tr := spansOf(t, rec)
	root := checkTree(t, tr, "attempt 1", "settle succeeded")
	attempt := tr.get(t, "attempt 1")
	if nodeSpan.SpanID() != attempt.SpanContext().SpanID() {
		t.Fatal("the node's ctx does not carry its attempt's span")
	}
	if attempt.Status().Code == codes.Error || attr(attempt, "nodeq.attempt") != "1" {
		t.Fatalf("attempt span %v %v", attempt.Status(), attempt.Attributes())
	}
	if attr(root, "nodeq.outcome") != "succeeded" || root.Status().Code == codes.Error {
		t.Fatalf("task span outcome %q status %v", attr(root, "nodeq.outcome"), root.Status())
	}
	checkResult(t, replies, root)
}

// A transient failure, a backoff wait, then success: two attempts, the
// first with its error kind, and the wait between them with its delay.
func TestTraceRetryThenSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := tracetest.NewSpanRecorder()
		replies := &fakeReplier{}
		runs := 0
		w := tracedWorker(rec, Options{Registry: nodes(func() error {
			runs++
			if runs == 1 {
				return resilience.Errorf(resilience.Transport, "downstream unavailable")
			}
			return nil
		}), Replier: replies, Retry: resilience.Fixed(250*time.Millisecond, 3)})
		msg := tracedMsg(t, "t1")
		w.Handle(context.Background(), queue.Delivery{Msg: msg})
		if got := msg.settlement(); len(got) != 1 || got[0] != "ack" {
			t.Fatalf("settled %v", got)
		}
		tr := spansOf(t, rec)
		root := checkTree(t, tr, "attempt 1", "backoff", "attempt 2", "settle succeeded")
		failed, backoff, second := tr.get(t, "attempt 1"), tr.get(t, "backoff"), tr.get(t, "attempt 2")
		if failed.Status().Code != codes.Error || failed.Status().Description != "downstream unavailable" || attr(failed, "error.type") != "Transport" {
			t.Fatalf("failed attempt: status %v, error.type %q", failed.Status(), attr(failed, "error.type"))
		}
		if attr(backoff, "nodeq.delay_ms") != "250" || attr(backoff, "nodeq.attempt") != "1" {
			t.Fatalf("backoff attributes %v", backoff.Attributes())
		}
		if took := backoff.EndTime().Sub(backoff.StartTime()); took != 250*time.Millisecond {
			t.Fatalf("backoff span lasts %v; want the 250ms wait", took)
		}
		if backoff.StartTime().Before(failed.EndTime()) || second.StartTime().Before(backoff.EndTime()) {
			t.Fatal("attempt 1, backoff and attempt 2 do not follow each other")
		}
		if second.Status().Code == codes.Error || attr(root, "nodeq.attempts") != "2" {
			t.Fatalf("second attempt %v, attempts %q", second.Status(), attr(root, "nodeq.attempts"))
		}
		checkResult(t, replies, root)
	})
}

// A dead letter: the settle step carries the reason and the error kind,
// the task span fails, the record keeps the traceparent header and names
// the trace, and the failure result carries the task span's traceparent.
func TestTraceDeadLetter(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	if err := queue.EnsureStreams(context.Background(), js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	replies := &fakeReplier{}
	w := tracedWorker(rec, Options{Registry: nodes(func() error {
		return resilience.Errorf(resilience.Manifest, "width must be positive \xff\xfe") // invalid UTF-8, as a program may print
	}), Replier: replies, DLQ: dlq.NewWriter(js, names.DLQPrefix), Retry: resilience.None()})
	msg := tracedMsg(t, "t1")
	msg.header.Set("Authorization", "Bearer s3cret")
	w.Handle(context.Background(), queue.Delivery{Msg: msg})
	if got := msg.settlement(); len(got) != 1 || got[0] != "term "+dlq.ReasonPermanent {
		t.Fatalf("settled %v", got)
	}
	tr := spansOf(t, rec)
	root := checkTree(t, tr, "attempt 1", "settle dead_lettered")
	settle := tr.get(t, "settle dead_lettered")
	if attr(settle, "nodeq.dead_letter.reason") != dlq.ReasonPermanent || attr(settle, "error.type") != "Manifest" || settle.Status().Code != codes.Error {
		t.Fatalf("settle span %v %v", settle.Status(), settle.Attributes())
	}
	if root.Status().Code != codes.Error || attr(root, "nodeq.outcome") != "dead_lettered" || attr(root, "nodeq.dead_letter.reason") != dlq.ReasonPermanent {
		t.Fatalf("task span %v %v", root.Status(), root.Attributes())
	}
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			if v := kv.Value.String(); !utf8.ValidString(v) || strings.Contains(v, "s3cret") {
				t.Errorf("span %s: attribute %s = %q (invalid UTF-8 fails a whole export; secrets stay out)", s.Name(), kv.Key, v)
			}
		}
		if !utf8.ValidString(s.Status().Description) {
			t.Errorf("span %s: status %q is not UTF-8", s.Name(), s.Status().Description)
		}
	}
	checkResult(t, replies, root)

	stream, err := js.Stream(context.Background(), names.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dlq.Decode(stored.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.TraceID != producer.TraceID().String() || tracing.SpanContext(got.Headers).SpanID() != producer.SpanID() {
		t.Fatalf("record %+v; want trace_id %s and the producer's traceparent header", got, producer.TraceID())
	}
}

// A task without a sound traceparent starts a new trace, and runs as any
// other: the trace context is never an error for the task.
func TestTraceHostileTraceparent(t *testing.T) {
	for name, tp := range map[string]string{"none": "", "malformed": "00-zz-zz-01", "control": "00-4bf92f3577b34da6a3ce929d0e0e4736\x00-00f067aa0ba902b7-01",
		"huge": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + strings.Repeat("x", 100<<10)} {
		t.Run(name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			w := tracedWorker(rec, Options{Registry: nodes(func() error { return nil }), Replier: &fakeReplier{}, Retry: resilience.None()})
			msg := newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 1)
			if tp != "" {
				msg.header.Set(tracing.HeaderTraceparent, tp)
			}
			w.Handle(context.Background(), queue.Delivery{Msg: msg})
			if got := msg.settlement(); len(got) != 1 || got[0] != "ack" {
				t.Fatalf("settled %v", got)
			}
			root := spansOf(t, rec).get(t, "nodeq.task n")
			if root.Parent().IsValid() || !root.SpanContext().IsValid() {
				t.Fatalf("task span's parent %v; want a new root", root.Parent())
			}
		})
	}
}

// Without a tracer the worker records nothing, writes no trace context on
// results and no trace ID in records, and the node's ctx has no span.
func TestTraceOff(t *testing.T) {
	replies := &fakeReplier{}
	var nodeSpan trace.SpanContext
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "n", Executor: executor.Func(func(ctx context.Context, _ *task.Envelope) ([]byte, error) {
		nodeSpan = trace.SpanContextFromContext(ctx)
		return nil, nil
	})})
	w := New(Options{Registry: reg, Replier: replies, Retry: resilience.None(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.Handle(context.Background(), queue.Delivery{Msg: tracedMsg(t, "t1")})
	if nodeSpan.IsValid() {
		t.Fatal("the node's ctx carries a span with tracing off")
	}
	if h := replies.only(t).Header; h.Get(tracing.HeaderTraceparent) != "" {
		t.Fatalf("result headers %v with tracing off", h)
	}
	var tt *taskTrace
	if tt.traceID() != "" || tt.startAttempt(context.Background(), 1) != context.Background() {
		t.Fatal("a nil taskTrace does something")
	}
}

// With a sample ratio of 0, a task without a traceparent records nothing,
// yet its node's ctx carries its (unsampled) trace context; a task
// whose producer's span was sampled is recorded whatever the ratio.
func TestTraceSampling(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	replies := &fakeReplier{}
	var nodeSpan trace.SpanContext
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "n", Executor: executor.Func(func(ctx context.Context, _ *task.Envelope) ([]byte, error) {
		nodeSpan = trace.SpanContextFromContext(ctx)
		return nil, resilience.Errorf(resilience.Transport, "down")
	})})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(tracing.Sampler(0)))
	w := New(Options{Registry: reg, Replier: replies, Retry: resilience.Fixed(time.Millisecond, 2), Tracer: tracing.Tracer(tp, "test"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	msg := newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 1)
	w.Handle(context.Background(), queue.Delivery{Msg: msg})
	if got := msg.settlement(); len(got) != 1 || !strings.HasPrefix(got[0], "nak") {
		t.Fatalf("settled %v", got)
	}
	if n := len(rec.Ended()); n != 0 || !nodeSpan.IsValid() || nodeSpan.IsSampled() {
		t.Fatalf("%d spans recorded, node's span context %v; want none recorded and an unsampled context", n, nodeSpan)
	}
	w.Handle(context.Background(), queue.Delivery{Msg: tracedMsg(t, "t1")})
	tr := spansOf(t, rec)
	checkTree(t, tr, "attempt 1", "backoff", "attempt 2", "settle redelivered")
	if root := tr.get(t, "nodeq.task n"); root.Status().Code != codes.Error || attr(root, "nodeq.outcome") != "redelivered" {
		t.Fatalf("redelivered task span %v %v", root.Status(), root.Attributes())
	}
}

func TestSpanText(t *testing.T) {
	long := strings.Repeat("é", maxSpanText)
	if got := spanText(long); len(got) > maxSpanText+3 || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
		t.Fatalf("cut to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if got := spanText("a\xffb"); got != "a\uFFFDb" {
		t.Fatalf("%q", got)
	}
}

// The cost of tracing per delivery: off (a nil tracer), recording every
// span, and on with the task's trace not sampled. Not a timed assertion.
func BenchmarkHandleTracing(b *testing.B) {
	env := &task.Envelope{ID: "t1", NodeType: "n"}
	data, err := task.EncodeMsgpack(env)
	if err != nil {
		b.Fatal(err)
	}
	ok := nodes(func() error { return nil })
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	recording := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardProcessor{}))
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discardProcessor{}), sdktrace.WithSampler(tracing.Sampler(0)))
	for name, tracer := range map[string]trace.Tracer{"off": nil, "recording": tracing.Tracer(recording, "bench"), "unsampled": tracing.Tracer(unsampled, "bench")} {
		b.Run(name, func(b *testing.B) {
			w := New(Options{Registry: ok, Retry: resilience.None(), AckAsync: true, Logger: discard, Tracer: tracer})
			b.ReportAllocs()
			for b.Loop() {
				msg := &fakeMsg{subject: "tasks.n", data: data, header: nats.Header{}, seq: 42, deliveries: 1}
				w.Handle(context.Background(), queue.Delivery{Msg: msg})
			}
		})
	}
}

// discardProcessor ends spans nowhere: the benchmark measures recording,
// not an exporter.
type discardProcessor struct{}

func (discardProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardProcessor) Shutdown(context.Context) error                  { return nil }
func (discardProcessor) ForceFlush(context.Context) error                { return nil }
