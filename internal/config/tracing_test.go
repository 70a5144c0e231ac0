package config

import (
	"strings"
	"testing"

	"github.com/nodeq/nodeq/internal/tracing"
)

// Tracing is off by default, with the tracing package's own defaults.
func TestTracingDefaults(t *testing.T) {
	s := Default().TracingSettings()
	if s.Endpoint != "" || s.SampleRatio != tracing.DefaultSampleRatio || s.ServiceName != tracing.DefaultServiceName {
		t.Fatalf("default tracing %+v; want off, ratio %v, service %s", s, tracing.DefaultSampleRatio, tracing.DefaultServiceName)
	}
	cfg, err := Parse("t.yaml", []byte("tracing:\n  otlp_endpoint: http://collector:4318\n  sample_ratio: 0.25\n  service_name: resize-workers\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := cfg.TracingSettings(); s.Endpoint != "http://collector:4318" || s.SampleRatio != 0.25 || s.ServiceName != "resize-workers" {
		t.Fatalf("settings %+v", s)
	}
}

// A tracing key that cannot work is an error at its line.
func TestTracingErrors(t *testing.T) {
	for yml, want := range map[string]string{
		"tracing:\n  otlp_endpoint: localhost:4318\n":                 "t.yaml:2: tracing.otlp_endpoint: scheme",
		"tracing:\n  otlp_endpoint: http://u:s3cret@collector:4318\n": "t.yaml:2: tracing.otlp_endpoint: credentials",
		"tracing:\n  otlp_endpoint: http://collector:4318?k=s3cret\n": "t.yaml:2: tracing.otlp_endpoint: a query",
		"tracing:\n  sample_ratio: 1.5\n":                             "t.yaml:2: tracing.sample_ratio: 1.5: want a share of traces from 0",
		"tracing:\n  sample_ratio: -0.1\n":                            "t.yaml:2: tracing.sample_ratio",
		"tracing:\n  service_name: \"\"\n":                            "t.yaml:2: tracing.service_name: empty",
		"tracing:\n  service_name: \"a\\nb\"\n":                       "t.yaml:2: tracing.service_name: holds control characters",
		"tracing:\n  exporter: jaeger\n":                              "t.yaml:2: tracing.exporter: unknown key",
	} {
		cfg, err := Parse("t.yaml", []byte(yml))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", yml, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the secret: %v", yml, err)
		}
	}
}

// OpenTelemetry's standard variables configure tracing; NODEQ_TRACING_*
// win over them.
func TestTracingEnv(t *testing.T) {
	otel := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_SERVICE_NAME": "from-otel"}
	cfg := Default()
	if err := cfg.ApplyEnv(func(k string) string { return otel[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.Tracing.OTLPEndpoint != "http://otel:4318" || cfg.Tracing.ServiceName != "from-otel" {
		t.Fatalf("OTEL_* not read: %+v", cfg.Tracing)
	}
	both := map[string]string{"NODEQ_TRACING_OTLP_ENDPOINT": "http://nodeq:4318", "NODEQ_TRACING_SERVICE_NAME": "from-nodeq", "NODEQ_TRACING_SAMPLE_RATIO": "0.5"}
	for k, v := range otel {
		both[k] = v
	}
	cfg = Default()
	if err := cfg.ApplyEnv(func(k string) string { return both[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.Tracing.OTLPEndpoint != "http://nodeq:4318" || cfg.Tracing.ServiceName != "from-nodeq" || cfg.Tracing.SampleRatio != 0.5 {
		t.Fatalf("NODEQ_TRACING_* must win: %+v", cfg.Tracing)
	}
}

// --check-config shows the tracing section.
func TestTracingPrinted(t *testing.T) {
	cfg := Default()
	cfg.Tracing.OTLPEndpoint = "http://collector:4318"
	out := cfg.Redacted()
	if !strings.Contains(out, "tracing:\n    otlp_endpoint: http://collector:4318\n    sample_ratio: 1\n    service_name: nodeq-consumer\n") {
		t.Fatalf("tracing section not printed:\n%s", out)
	}
}
