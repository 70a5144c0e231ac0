package integration

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// tracedConsumer runs the production wiring (consumer.New) on e with reg,
// recording spans with tp when it is set, else as cfg's tracing section
// says; stop shuts it down and waits.
func (e *env) tracedConsumer(reg *executor.Registry, tp trace.TracerProvider, mod func(*config.Config)) (stop func()) {
	e.t.Helper()
	cfg := config.Default()
	cfg.Names = config.Names{TaskStream: e.names.TaskStream, TaskPrefix: e.names.TaskPrefix, DLQStream: e.names.DLQStream,
		DLQPrefix: e.names.DLQPrefix, Consumer: e.names.Consumer}
	cfg.Consumer.Workers, cfg.Consumer.PullWait = 4, pullWait
	cfg.Breaker.FailureThreshold, cfg.Breaker.FailureRate = 0, 0
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	c, err := consumer.New(context.Background(), consumer.Options{Config: cfg, Conn: e.nc, Logger: testLogger(e.t), Registry: reg, Durable: e.cons,
		Retry: resilience.Fixed(20*time.Millisecond, 3), Redelivery: &resilience.Redelivery{MaxDeliveries: 1}, TracerProvider: tp})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("consumer: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// hookServer is an http node's downstream that records the traceparent
// of each request.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	parent []string
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.parent = append(h.parent, r.Header.Get("Traceparent"))
		h.mu.Unlock()
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(h.Close)
	return h
}

// A task's trace runs from the producer's span through the consumer's
// spans (task, attempts, backoff, settle) to the http node's downstream,
// the result and the dead-letter record; a task without a sound
// traceparent starts a trace of its own; tracing never fails a task.
func TestTracingEndToEnd(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	hook := newHookServer(t)
	httpNode, err := executor.HTTP(executor.HTTPConfig{URL: hook.URL})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	flakyRuns := 0
	reg := executor.NewRegistry()
	for _, n := range []executor.Node{
		{Type: "hook", Executor: httpNode},
		{Type: "flaky", Executor: executor.Func(func(context.Context, *task.Envelope) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			if flakyRuns++; flakyRuns == 1 {
				return nil, resilience.Errorf(resilience.Transport, "downstream unavailable")
			}
			return []byte("done"), nil
		})},
		{Type: "bad", Executor: executor.Func(func(context.Context, *task.Envelope) ([]byte, error) {
			return nil, resilience.Errorf(resilience.Manifest, "width must be positive")
		})},
		{Type: "echo", Executor: executor.Echo()},
	} {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	stop := e.tracedConsumer(reg, tp, nil)

	// The producer: one span, four tasks published inside it, and two
	// published outside any span, one with a traceparent nobody can read.
	results, err := e.nc.SubscribeSync("_INBOX.traced.>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = results.Unsubscribe() }()
	ctx, producer := tp.Tracer("producer").Start(context.Background(), "produce")
	pub := queue.NewPublisher(e.js, e.names)
	published := []string{"hook-1", "flaky-1", "bad-1", "echo-1", "echo-plain", "echo-hostile"}
	for _, id := range published[:4] {
		nodeType, _, _ := strings.Cut(id, "-")
		if _, err := pub.Publish(ctx, &task.Envelope{ID: id, NodeType: nodeType, ReplyTo: "_INBOX.traced." + id}); err != nil {
			t.Fatal(err)
		}
	}
	producer.End()
	if _, err := pub.Publish(context.Background(), &task.Envelope{ID: "echo-plain", NodeType: "echo", ReplyTo: "_INBOX.traced.echo-plain"}); err != nil {
		t.Fatal(err)
	}
	hostile, err := pub.Message(&task.Envelope{ID: "echo-hostile", NodeType: "echo", ReplyTo: "_INBOX.traced.echo-hostile"})
	if err != nil {
		t.Fatal(err)
	}
	hostile.Header.Set(tracing.HeaderTraceparent, "00-"+strings.Repeat("\x00", 32)+"-"+strings.Repeat("f", 16)+"-01"+strings.Repeat(" ", 4<<10))
	if _, err := e.js.PublishMsg(context.Background(), hostile); err != nil {
		t.Fatal(err)
	}

	// Every task reaches its outcome; each result carries the traceparent
	// of its task's span.
	resultTrace := map[string]trace.SpanContext{}
	succeeded := 0
	for range published {
		msg, err := results.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("results so far %v: %v", resultTrace, err)
		}
		r, err := task.DecodeResult(msg.Data, msg.Header.Get(queue.HeaderContentType))
		if err != nil {
			t.Fatal(err)
		}
		if want := r.TaskID != "bad-1"; r.OK != want {
			t.Errorf("task %s: ok %v (%s)", r.TaskID, r.OK, r.Error)
		}
		if r.OK {
			succeeded++
		}
		resultTrace[r.TaskID] = tracing.SpanContext(msg.Header)
	}
	stop() // the last spans end with their deliveries

	taskSpans := map[string]tracetest.SpanStub{} // by task ID
	children := map[trace.SpanID][]string{}      // names of each span's children
	for _, s := range spans.GetSpans() {
		children[s.Parent.SpanID()] = append(children[s.Parent.SpanID()], s.Name)
		if strings.HasPrefix(s.Name, "nodeq.task ") {
			for _, kv := range s.Attributes {
				if kv.Key == "nodeq.task_id" {
					taskSpans[kv.Value.AsString()] = s
				}
			}
		}
	}
	wantChildren := map[string]string{
		"hook-1":       "attempt 1, settle succeeded",
		"flaky-1":      "attempt 1, backoff, attempt 2, settle succeeded",
		"bad-1":        "attempt 1, settle dead_lettered",
		"echo-1":       "attempt 1, settle succeeded",
		"echo-plain":   "attempt 1, settle succeeded",
		"echo-hostile": "attempt 1, settle succeeded",
	}
	for _, id := range published {
		s, ok := taskSpans[id]
		if !ok {
			t.Errorf("no span for task %s", id)
			continue
		}
		inProducerTrace := s.SpanContext.TraceID() == producer.SpanContext().TraceID()
		switch id {
		case "echo-plain", "echo-hostile":
			if s.Parent.IsValid() || inProducerTrace {
				t.Errorf("task %s: parent %v; want a trace of its own", id, s.Parent)
			}
		default:
			if s.Parent.SpanID() != producer.SpanContext().SpanID() || !inProducerTrace {
				t.Errorf("task %s: parent %v; want the producer's span", id, s.Parent)
			}
		}
		if got := strings.Join(children[s.SpanContext.SpanID()], ", "); got != wantChildren[id] {
			t.Errorf("task %s: spans under it %q; want %q", id, got, wantChildren[id])
		}
		if rt := resultTrace[id]; rt.TraceID() != s.SpanContext.TraceID() || rt.SpanID() != s.SpanContext.SpanID() {
			t.Errorf("task %s: result's trace context %v; want its span's", id, rt)
		}
	}

	// The http node's request continues the trace from its attempt's span.
	hook.mu.Lock()
	hookParent := append([]string(nil), hook.parent...)
	hook.mu.Unlock()
	if s, ok := taskSpans["hook-1"]; ok {
		sent := tracing.SpanContext(nats.Header{tracing.HeaderTraceparent: hookParent})
		var attempt trace.SpanID
		for _, c := range spans.GetSpans() {
			if c.Name == "attempt 1" && c.Parent.SpanID() == s.SpanContext.SpanID() {
				attempt = c.SpanContext.SpanID()
			}
		}
		if len(hookParent) != 1 || sent.TraceID() != producer.SpanContext().TraceID() || sent.SpanID() != attempt {
			t.Errorf("downstream got traceparent %q; want the hook task's attempt span in the producer's trace", hookParent)
		}
	}

	// The dead-letter record names the trace and keeps the traceparent.
	recs := e.records()
	if len(recs) != 1 {
		t.Fatalf("%d dead-letter records; want 1", len(recs))
	}
	rec := recs[0].rec
	if rec.TaskID != "bad-1" || rec.Reason != dlq.ReasonPermanent || rec.TraceID != producer.SpanContext().TraceID().String() ||
		tracing.SpanContext(rec.Headers).TraceID() != producer.SpanContext().TraceID() {
		t.Errorf("record %s (%s): trace_id %q, headers %v; want the producer's trace %s", rec.TaskID, rec.Reason, rec.TraceID, rec.Headers, producer.SpanContext().TraceID())
	}

	deadLettered, queued := len(recs), int(e.streamMsgs(e.names.TaskStream))
	lost := len(published) - succeeded - deadLettered - queued
	t.Logf("published %d, succeeded %d, dead-lettered %d, lost %d", len(published), succeeded, deadLettered, lost)
	if lost != 0 || succeeded != 5 {
		t.Fatalf("accounting broken: published %d != succeeded %d + dead-lettered %d (%d queued)", len(published), succeeded, deadLettered, queued)
	}
}

// Configured with an OTLP endpoint, the consumer exports its spans there,
// the last ones when Run ends; with none it starts no exporter (the
// package's leak check fails on a goroutine left behind).
func TestTracingExportsOverOTLP(t *testing.T) {
	var mu sync.Mutex
	var posts []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts = append(posts, r.URL.Path+" "+string(body))
		mu.Unlock()
	}))
	defer collector.Close()
	reg := executor.NewRegistry()
	if err := reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()}); err != nil {
		t.Fatal(err)
	}
	published, succeeded, deadLettered := 0, 0, 0
	for _, endpoint := range []string{"", collector.URL} {
		e := newEnv(t, queue.StreamOptions{})
		stop := e.tracedConsumer(reg, nil, func(cfg *config.Config) {
			cfg.Tracing.OTLPEndpoint, cfg.Tracing.ServiceName = endpoint, "nodeq-under-test"
		})
		results, err := e.nc.SubscribeSync("_INBOX.exported")
		if err != nil {
			t.Fatal(err)
		}
		e.publish(&task.Envelope{ID: "exported", NodeType: "echo", ReplyTo: "_INBOX.exported"})
		published++
		msg, err := results.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := task.DecodeResult(msg.Data, msg.Header.Get(queue.HeaderContentType)); err == nil && r.OK {
			succeeded++
		}
		_ = results.Unsubscribe()
		stop()
		deadLettered += len(e.records())
		mu.Lock()
		n := len(posts)
		mu.Unlock()
		switch {
		case endpoint == "" && n != 0:
			t.Fatalf("tracing off, yet %d exports", n)
		case endpoint != "" && (n == 0 || !strings.HasPrefix(posts[0], tracing.TracesPath+" ") || !strings.Contains(posts[0], "nodeq-under-test") || !strings.Contains(posts[0], "nodeq.task echo")):
			t.Fatalf("exports %q; want the task's spans posted to %s by the end of Run", posts, tracing.TracesPath)
		}
	}
	lost := published - succeeded - deadLettered
	t.Logf("published %d, succeeded %d, dead-lettered %d, lost %d", published, succeeded, deadLettered, lost)
	if lost != 0 || succeeded != published {
		t.Fatal("accounting broken")
	}
}
