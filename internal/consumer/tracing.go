package consumer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/tracing"
	"github.com/nodeq/nodeq/internal/version"
)

// tracingFlushTimeout bounds how long Run's end waits for the last spans
// to reach the collector.
const tracingFlushTimeout = 5 * time.Second

// startTracing returns the worker's tracer: Options.TracerProvider's when
// set (the caller owns it), else the configured OTLP exporter's (Run shuts
// it down), else nil, and then nothing is recorded. It is called last in
// New, once nothing else can fail; on its own failure it releases the ack
// confirmer New opened.
func (c *Consumer) startTracing() (trace.Tracer, error) {
	if tp := c.o.TracerProvider; tp != nil {
		return tracing.Tracer(tp, version.String()), nil
	}
	s := c.cfg.TracingSettings()
	s.ServiceVersion, s.InstanceID, s.Logger = version.String(), c.o.ID, c.log
	p, err := tracing.New(s)
	if err != nil {
		if c.acks != nil {
			_ = c.acks.Close(context.Background()) // nothing was acked
		}
		return nil, err
	}
	if !p.Enabled() {
		return nil, nil
	}
	c.traces = p
	c.log.Info("tracing on: spans exported over OTLP/HTTP", "otlp_endpoint", s.Endpoint, "sample_ratio", s.SampleRatio, "service_name", s.ServiceName)
	return p.Tracer(version.String()), nil
}

// stopTracing exports the spans still buffered, for at most
// tracingFlushTimeout, and stops the exporter.
func (c *Consumer) stopTracing() {
	if c.traces == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
	defer cancel()
	if err := c.traces.Shutdown(ctx); err != nil {
		c.log.Warn("spans not all exported before the process stops", "err", err)
	}
}
