package tracing

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
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
)

const sound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// A span's context injected into a task's headers comes back out of them:
// the consumer's span is the producer span's child, in the same trace.
func TestPropagationRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := Tracer(tp, "test").Start(context.Background(), "produce")
	defer span.End()
	ts, err := trace.ParseTraceState("vendor=abc")
	if err != nil {
		t.Fatal(err)
	}
	ctx = trace.ContextWithSpanContext(ctx, span.SpanContext().WithTraceState(ts))

	h := nats.Header{}
	Inject(ctx, h)
	injected := h.Get(HeaderTraceparent)
	if got := h.Get(HeaderTraceparent); len(got) != 55 || !strings.Contains(got, span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q; want the span's (trace %s)", got, span.SpanContext().TraceID())
	}
	if got := h.Get(HeaderTracestate); got != "vendor=abc" {
		t.Fatalf("tracestate %q", got)
	}
	sc := SpanContext(h)
	if !sc.IsRemote() || sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsSampled() {
		t.Fatalf("extracted %+v; want the injected span's context", sc)
	}
	if sc.TraceState().Get("vendor") != "abc" {
		t.Fatalf("tracestate lost: %q", sc.TraceState())
	}

	// Injected again over a stale value under another spelling: one header.
	h = nats.Header{"Traceparent": {"00-00000000000000000000000000000001-0000000000000001-01"}}
	Inject(ctx, h)
	if len(h) != 2 || len(h[HeaderTraceparent]) != 1 || SpanContext(h).TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("headers %v; want one traceparent, the span's", h)
	}

	// No span, no header; HTTP headers too.
	h = nats.Header{}
	Inject(context.Background(), h)
	if len(h) != 0 {
		t.Fatalf("injected %v without a span", h)
	}
	hh := http.Header{}
	InjectHTTP(ctx, hh)
	if hh.Get("Traceparent") != injected {
		t.Fatalf("http traceparent %q", hh.Get("Traceparent"))
	}
}

// A traceparent a producer sent is hostile input: anything unsound is
// ignored (the task starts a new trace), never an error or a panic.
func TestHostileTraceparent(t *testing.T) {
	for name, h := range map[string]nats.Header{
		"none":                 {},
		"empty":                {HeaderTraceparent: {""}},
		"garbage":              {HeaderTraceparent: {"hello"}},
		"upper-case hex":       {HeaderTraceparent: {strings.ToUpper(sound)}},
		"zero trace id":        {HeaderTraceparent: {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}},
		"zero span id":         {HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}},
		"version ff":           {HeaderTraceparent: {"ff" + sound[2:]}},
		"version 00 with more": {HeaderTraceparent: {sound + "-extra"}},
		"short":                {HeaderTraceparent: {sound[:54]}},
		"control character":    {HeaderTraceparent: {sound[:20] + "\x00" + sound[21:]}},
		"newline":              {HeaderTraceparent: {sound + "\n"}},
		"non-ascii":            {HeaderTraceparent: {sound[:20] + "é" + sound[22:]}},
		"huge":                 {HeaderTraceparent: {"01" + sound[2:] + "-" + strings.Repeat("a", 1<<20)}},
		"twice":                {HeaderTraceparent: {sound, sound}},
		"two spellings":        {HeaderTraceparent: {sound}, "TraceParent": {sound}},
		"wildcards":            {HeaderTraceparent: {"00-*-*-01"}},
	} {
		t.Run(name, func(t *testing.T) {
			if sc := SpanContext(h); sc.IsValid() {
				t.Fatalf("accepted %q as %v", h, sc)
			}
			ctx := context.WithValue(context.Background(), ctxMark{}, 1)
			if Extract(ctx, h) != ctx {
				t.Fatal("Extract changed the context for an unsound traceparent")
			}
		})
	}

	// A later version may add fields; a bounded one is read.
	if sc := SpanContext(nats.Header{HeaderTraceparent: {"01" + sound[2:] + "-more"}}); !sc.IsValid() {
		t.Error("a version 01 traceparent with another field was refused")
	}
	// Another spelling of the name is read.
	if sc := SpanContext(nats.Header{"Traceparent": {sound}}); !sc.IsValid() {
		t.Error("Traceparent was not read")
	}
	// An unsound tracestate is dropped; the traceparent stays.
	for name, ts := range map[string][]string{
		"huge":      {"a=" + strings.Repeat("b", MaxTracestateLen)},
		"control":   {"a=b\x01"},
		"malformed": {"=,=,"},
		"twice":     {"a=b", "c=d"},
	} {
		sc := SpanContext(nats.Header{HeaderTraceparent: {sound}, HeaderTracestate: ts})
		if !sc.IsValid() || sc.TraceState().Len() != 0 {
			t.Errorf("tracestate %s: span context %v, tracestate %q; want the traceparent without tracestate", name, sc.IsValid(), sc.TraceState())
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for endpoint, want := range map[string]string{
		"http://localhost:4318":              "http://localhost:4318/v1/traces",
		"http://localhost:4318/":             "http://localhost:4318/v1/traces",
		"https://otel.example:443/v1/traces": "https://otel.example:443/v1/traces",
		"http://gateway/otlp":                "http://gateway/otlp/v1/traces",
	} {
		if got, err := tracesURL(endpoint); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", endpoint, got, err, want)
		}
	}
	for endpoint, want := range map[string]string{
		"localhost:4318":                   "scheme",
		"grpc://localhost:4317":            "scheme",
		"http://":                          "no host",
		"http://user:pw@localhost:4318":    "OTEL_EXPORTER_OTLP_HEADERS",
		"http://localhost:4318?key=s3cr3t": "query",
		"http://local host:4318":           "control",
		"http://localhost:4318/\x00":       "control",
	} {
		err := CheckEndpoint(endpoint)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want an error about %s", endpoint, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error shows the secret: %v", endpoint, err)
		}
	}
	for name, want := range map[string]bool{"nodeq-consumer": true, "": false, "a\nb": false, strings.Repeat("x", 256): false} {
		if got := CheckServiceName(name) == nil; got != want {
			t.Errorf("service name %q: ok %v; want %v", name, got, want)
		}
	}
}

// Off, the provider starts nothing and hands out no tracer.
func TestOff(t *testing.T) {
	p, err := New(Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || p.Tracer("v") != nil {
		t.Fatal("a provider without an endpoint traces")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Settings{Endpoint: "http://localhost:4318", SampleRatio: 2}); err == nil {
		t.Fatal("sample ratio 2 accepted")
	}
}

// Configured, spans go to the collector's /v1/traces with the resource's
// service name, when the provider shuts down at the latest.
func TestExportsToCollector(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	var paths []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, paths = append(bodies, body), append(paths, r.URL.Path+" "+r.Header.Get("Content-Type"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	p, err := New(Settings{Endpoint: collector.URL, SampleRatio: 1, ServiceName: "svc-under-test", ServiceVersion: "1.2.3", InstanceID: "host/1"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer("1.2.3").Start(context.Background(), "nodeq.task echo")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 || paths[0] != "/v1/traces application/x-protobuf" {
		t.Fatalf("collector got %d requests %v; want 1 POST of protobuf to /v1/traces", len(bodies), paths)
	}
	for _, want := range []string{"svc-under-test", "nodeq.task echo", "1.2.3", "host/1", ScopeName} {
		if !bytes.Contains(bodies[0], []byte(want)) {
			t.Errorf("export lacks %q", want)
		}
	}
}

// A collector that refuses spans costs a log line a minute, not one per
// batch, and nothing else.
func TestExportFailuresLogged(t *testing.T) {
	var buf bytes.Buffer
	next := &failingExporter{}
	e := &loggedExporter{SpanExporter: next, log: slog.New(slog.NewTextHandler(&buf, nil))}
	spans := tracetest.SpanStubs{{Name: "a"}, {Name: "b"}}.Snapshots()
	for range 3 {
		next.err = errors.New("connection refused")
		if err := e.ExportSpans(context.Background(), spans); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "trace export failed"); n != 1 {
		t.Fatalf("%d failure lines for 3 failures within a minute; want 1:\n%s", n, buf.String())
	}
	next.err = nil
	if err := e.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "trace export works again") || !strings.Contains(buf.String(), "spans_dropped=4") {
		t.Fatalf("recovery not logged with the spans dropped since:\n%s", buf.String())
	}
}

// ctxMark marks a context, to tell it from another.
type ctxMark struct{}

type failingExporter struct{ err error }

func (f *failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return f.err }
func (f *failingExporter) Shutdown(context.Context) error                             { return nil }
