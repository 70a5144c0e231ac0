package executor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/task"
)

// An http node's request carries the traceparent of the span its run's
// ctx carries, and none without a span.
func TestHTTPSendsTraceparent(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer srv.Close()
	ex := httpExec(t, srv.URL)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab}, SpanID: trace.SpanID{0xcd}, TraceFlags: trace.FlagsSampled})
	env := &task.Envelope{ID: "t-1", NodeType: "hook"}
	if _, err := ex.Execute(trace.ContextWithSpanContext(context.Background(), sc), env); err != nil {
		t.Fatal(err)
	}
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; <-got != want {
		t.Fatalf("traceparent not %s", want)
	}
	if _, err := ex.Execute(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if tp := <-got; tp != "" {
		t.Fatalf("traceparent %q without a span", tp)
	}
}
