package tracing

import (
	"context"
	"log/slog"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// exportLogEvery is how often a failing export is logged.
const exportLogEvery = time.Minute

// loggedExporter logs failed exports itself, at most every exportLogEvery
// with the spans dropped meanwhile, and reports them to the span processor
// as done: a collector that is down must cost a log line a minute, not
// one per batch on the global error handler's unstructured log.
type loggedExporter struct {
	sdktrace.SpanExporter
	log *slog.Logger

	mu      sync.Mutex
	failing bool
	lastLog time.Time
	dropped int
}

// ExportSpans implements sdktrace.SpanExporter.
func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		if e.failing {
			e.log.Info("trace export works again", "spans_dropped", e.dropped)
			e.failing, e.dropped = false, 0
		}
		return nil
	}
	e.dropped += len(spans)
	if !e.failing || time.Since(e.lastLog) >= exportLogEvery {
		e.log.Warn("trace export failed; spans dropped, tasks unaffected (repeated at most every minute)", "err", err, "spans_dropped", e.dropped)
		e.lastLog, e.dropped = time.Now(), 0
	}
	e.failing = true
	return nil
}
