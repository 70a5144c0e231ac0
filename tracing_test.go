package nodeq_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq"
)

// A Call made inside a span: the handler's ctx continues that trace, and
// the consumer's spans, recorded with the program's own provider, hang
// under the caller's span.
func TestCallContinuesTheCallersTrace(t *testing.T) {
	cfg := testConfig(startServer(t))
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	handled := make(chan trace.SpanContext, 1)
	c := startConsumer(t, cfg, handlers{"traced": func(ctx context.Context, _ *nodeq.Task) ([]byte, error) {
		handled <- trace.SpanContextFromContext(ctx)
		return nil, nil
	}}, nodeq.WithTracerProvider(tp))
	ctx, caller := tp.Tracer("caller").Start(callCtx(t), "call")
	if _, err := newClient(t, cfg).Call(ctx, "traced", nil, nodeq.WithTaskID("t-1")); err != nil {
		t.Fatal(err)
	}
	caller.End()
	if sc := <-handled; sc.TraceID() != caller.SpanContext().TraceID() || sc.SpanID() == caller.SpanContext().SpanID() {
		t.Fatalf("handler's span context %v; want a span of the caller's trace %v", sc, caller.SpanContext().TraceID())
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range spans.GetSpans() {
		if s.Name == "nodeq.task traced" {
			if s.Parent.SpanID() != caller.SpanContext().SpanID() {
				t.Fatalf("task span's parent %v; want the caller's span %v", s.Parent.SpanID(), caller.SpanContext().SpanID())
			}
			return
		}
	}
	t.Fatalf("no task span among %d spans", len(spans.GetSpans()))
}
