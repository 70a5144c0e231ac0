// Package tracing sets up OpenTelemetry tracing for nodeq and carries the
// W3C trace context (traceparent, tracestate) in NATS message headers and
// HTTP requests.
//
// Tracing is off unless an OTLP endpoint is configured: New then returns a
// Provider whose Tracer is nil, and the packages that trace treat a nil
// tracer as "record nothing". Propagation does not depend on it: Inject
// writes the trace context of whatever span a context carries, so a
// producer inside its own span hands that trace to the task either way.
//
// A task's headers are hostile input: Extract ignores a traceparent that is
// malformed, repeated, longer than MaxTraceparentLen or holds anything but
// printable ASCII (the task then starts a new trace), and drops a tracestate
// that is not sound; neither is ever an error for the task.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of the tracing settings.
const (
	// DefaultSampleRatio samples every trace that starts in nodeq.
	DefaultSampleRatio = 1.0
	// DefaultServiceName is the service.name of the spans a consumer exports.
	DefaultServiceName = "nodeq-consumer"
)

// ScopeName is the instrumentation scope of nodeq's spans.
const ScopeName = "github.com/nodeq/nodeq"

// TracesPath is the OTLP/HTTP path of traces, added to an endpoint that
// does not end with it.
const TracesPath = "/v1/traces"

// maxServiceName bounds service.name; maxAttributeLen every attribute's
// value the provider records (whatever a task holds, a span stays small).
const (
	maxServiceName  = 255
	maxAttributeLen = 1024
)

// Settings configure New.
type Settings struct {
	// Endpoint is the OTLP/HTTP collector's URL, e.g.
	// http://localhost:4318 (TracesPath is added when the path does not
	// end with it). Empty: tracing is off.
	Endpoint string
	// SampleRatio is the share of traces starting in nodeq that are
	// sampled, 0 to 1. A task whose producer's span was sampled (or not)
	// follows its parent's decision. Default DefaultSampleRatio.
	SampleRatio float64
	// ServiceName is the resource's service.name. Default DefaultServiceName.
	ServiceName string
	// ServiceVersion is service.version; InstanceID service.instance.id.
	ServiceVersion string
	InstanceID     string
	// Logger receives export failures, at most once a minute. Default slog.Default().
	Logger *slog.Logger
}

// CheckEndpoint reports why endpoint cannot be an OTLP/HTTP endpoint.
// Credentials and query parameters are refused rather than dropped: the
// exporter sends neither (set OTEL_EXPORTER_OTLP_HEADERS for an
// Authorization header).
func CheckEndpoint(endpoint string) error {
	_, err := tracesURL(endpoint)
	return err
}

// tracesURL is the URL spans are sent to.
func tracesURL(endpoint string) (string, error) {
	if strings.ContainsFunc(endpoint, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return "", errors.New("the URL holds spaces or control characters")
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", errors.New("not a URL; want e.g. http://localhost:4318")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme %q: want an http:// or https:// URL, e.g. http://localhost:4318 (nodeq exports OTLP over HTTP)", u.Scheme)
	case u.Host == "":
		return "", errors.New("no host; want e.g. http://localhost:4318")
	case u.User != nil:
		return "", errors.New("credentials in the URL are not sent; set OTEL_EXPORTER_OTLP_HEADERS (e.g. Authorization=Bearer ...) instead")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", errors.New("a query or fragment is not sent; give scheme, host, port and path only")
	}
	if !strings.HasSuffix(u.Path, TracesPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + TracesPath
	}
	return u.String(), nil
}

// CheckServiceName reports why name cannot be a service.name.
func CheckServiceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty; want a name such as " + DefaultServiceName)
	case len(name) > maxServiceName:
		return fmt.Errorf("%d bytes, more than %d", len(name), maxServiceName)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("holds control characters")
	}
	return nil
}

// Provider is the tracer provider of a process: an OTLP exporter behind a
// batching span processor when tracing is configured, nothing otherwise.
type Provider struct {
	sdk *sdktrace.TracerProvider // nil when off
}

// New returns the provider Settings describe. It does not connect: the
// exporter sends batches in the background, and a collector that is down
// costs dropped spans (logged), never a task. Call Shutdown at the end.
func New(s Settings) (*Provider, error) {
	if s.Endpoint == "" {
		return &Provider{}, nil
	}
	endpoint, err := tracesURL(s.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp_endpoint: %w", err)
	}
	if s.ServiceName == "" {
		s.ServiceName = DefaultServiceName
	}
	if err := CheckServiceName(s.ServiceName); err != nil {
		return nil, fmt.Errorf("tracing: service_name: %w", err)
	}
	if !(s.SampleRatio >= 0 && s.SampleRatio <= 1) { // NaN too
		return nil, fmt.Errorf("tracing: sample_ratio %v: want 0 to 1", s.SampleRatio)
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", s.ServiceName)}
	if s.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", s.ServiceVersion))
	}
	if s.InstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", s.InstanceID))
	}
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = maxAttributeLen
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithRawSpanLimits(limits),
		sdktrace.WithBatcher(&loggedExporter{SpanExporter: exp, log: s.Logger.With("otlp_endpoint", endpoint)}),
		sdktrace.WithSampler(Sampler(s.SampleRatio)),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Provider{sdk: tp}, nil
}

// Sampler is the sampler of a ratio: a task whose producer sent a trace
// context follows its parent's decision; a trace that starts in nodeq is
// sampled with the ratio.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// Enabled reports whether the provider records and exports spans.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// Tracer returns nodeq's tracer, nil when tracing is off.
func (p *Provider) Tracer(version string) trace.Tracer {
	if !p.Enabled() {
		return nil
	}
	return Tracer(p.sdk, version)
}

// Tracer returns nodeq's tracer from any provider (a program's own).
func Tracer(tp trace.TracerProvider, version string) trace.Tracer {
	return tp.Tracer(ScopeName, trace.WithInstrumentationVersion(version))
}

// Shutdown exports the spans still buffered and stops the exporter, within
// ctx: bound it with a deadline, since a collector that is down would
// otherwise hold the process. Off, it does nothing.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush spans: %w", err)
	}
	return nil
}
