package config

import (
	"github.com/nodeq/nodeq/internal/tracing"
)

// validateTracing checks the tracing section (its sample_ratio is a bound).
func (c *Config) validateTracing() []error {
	var errs []error
	t := c.Tracing
	if t.OTLPEndpoint != "" {
		if err := tracing.CheckEndpoint(t.OTLPEndpoint); err != nil {
			errs = append(errs, c.fieldErr("tracing.otlp_endpoint", "%v", err))
		}
	}
	if err := tracing.CheckServiceName(t.ServiceName); err != nil {
		errs = append(errs, c.fieldErr("tracing.service_name", "%v", err))
	}
	return errs
}

// applyOTelEnv reads OpenTelemetry's standard variables into the tracing
// section; NODEQ_TRACING_* (read after) win over them.
func (c *Config) applyOTelEnv(getenv func(string) string) {
	if v := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		c.Tracing.OTLPEndpoint = v
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		c.Tracing.ServiceName = v
	}
}

// TracingSettings are the tracer provider's settings; tracing is off when
// tracing.otlp_endpoint is empty.
func (c *Config) TracingSettings() tracing.Settings {
	return tracing.Settings{Endpoint: c.Tracing.OTLPEndpoint, SampleRatio: c.Tracing.SampleRatio, ServiceName: c.Tracing.ServiceName}
}
