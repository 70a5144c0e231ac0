package tracing

import (
	"context"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C trace context headers, as nodeq writes them on NATS messages.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// Bounds on the trace context read from a message. A traceparent of
// version 00 is 55 bytes; later versions may add fields, not kilobytes.
// The W3C recommends propagating at least 512 bytes of tracestate.
const (
	MaxTraceparentLen = 256
	MaxTracestateLen  = 512
)

var w3c propagation.TraceContext

// Inject writes the trace context of the span ctx carries into h, as
// traceparent (and tracestate when there is one). Without a span it writes
// nothing.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	w3c.Inject(ctx, natsCarrier(h))
}

// InjectHTTP is Inject for an HTTP request's headers.
func InjectHTTP(ctx context.Context, h http.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	w3c.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx with the remote span context of h's traceparent and
// tracestate. A missing, repeated, oversized, non-ASCII or malformed
// traceparent leaves ctx as it is (a span started from it begins a new
// trace); an unsound tracestate is dropped and the traceparent kept.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return w3c.Extract(ctx, readCarrier{h})
}

// SpanContext is the remote span context of h's trace context headers;
// invalid (IsValid false) when they carry none that is sound.
func SpanContext(h nats.Header) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), h))
}

// natsCarrier writes the trace context into NATS headers, replacing any
// value already there under the same name.
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string { return nats.Header(c).Get(key) }

func (c natsCarrier) Set(key, value string) {
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// readCarrier reads a task's trace context headers, hostile input: it
// returns "" for a header that is absent, sent more than once (under any
// spelling of its name), longer than its bound, or holding anything but
// printable ASCII. Names match case-insensitively: a producer's library
// may send Traceparent.
type readCarrier struct{ h nats.Header }

func (c readCarrier) Get(key string) string {
	limit := MaxTraceparentLen
	if key == HeaderTracestate {
		limit = MaxTracestateLen
	}
	var v string
	n := 0
	for k, vs := range c.h {
		if k == key || strings.EqualFold(k, key) {
			n += len(vs)
			if len(vs) > 0 {
				v = vs[0]
			}
		}
	}
	if n != 1 {
		return "" // absent, or sent twice (perhaps under two spellings)
	}
	if len(v) > limit || !printableASCII(v) {
		return ""
	}
	return v
}

func (c readCarrier) Set(string, string) {}

func (c readCarrier) Keys() []string { return []string{HeaderTraceparent, HeaderTracestate} }

// printableASCII reports whether s holds only the bytes 0x20 to 0x7e.
func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
