package queue

import (
	"context"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// A task published inside a span carries the span's trace context; one
// published without a span carries none.
func TestPublishCarriesTraceContext(t *testing.T) {
	_, js := testServer(t)
	names := DefaultNames()
	if err := EnsureStreams(context.Background(), js, names, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled})
	inSpan := trace.ContextWithSpanContext(context.Background(), sc)
	pub := NewPublisher(js, names)
	if _, err := pub.Publish(inSpan, &task.Envelope{ID: "traced", NodeType: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), &task.Envelope{ID: "plain", NodeType: "echo"}); err != nil {
		t.Fatal(err)
	}
	err := pub.PublishAll(inSpan, slices.Values([]*task.Envelope{{ID: "batch", NodeType: "echo"}}), 1, func(o Outcome) {
		if o.Err != nil {
			t.Error(o.Err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]trace.SpanContext{1: sc, 2: {}, 3: sc} {
		m, err := stream.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		got := tracing.SpanContext(m.Header)
		if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || got.IsValid() != want.IsValid() {
			t.Errorf("task %d (%s): trace context %v; want %v", seq, m.Header.Get(jetstream.MsgIDHeader), got, want)
		}
	}
}
