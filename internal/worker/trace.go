package worker

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// Span attributes. The messaging.* and error.type names are OpenTelemetry's
// semantic conventions; the nodeq.* ones are this project's.
const (
	attrMessagingSystem   = "messaging.system"
	attrOperationType     = "messaging.operation.type"
	attrDestination       = "messaging.destination.name"
	attrConsumerGroup     = "messaging.consumer.group.name"
	attrMessageID         = "messaging.message.id"
	attrConversationID    = "messaging.message.conversation_id"
	attrErrorType         = "error.type"
	attrTaskID            = "nodeq.task_id"
	attrNodeID            = "nodeq.node_id"
	attrNodeType          = "nodeq.node_type"
	attrDelivery          = "nodeq.delivery"
	attrStreamSeq         = "nodeq.stream_seq"
	attrAttempt           = "nodeq.attempt"
	attrAttempts          = "nodeq.attempts"
	attrOutcome           = "nodeq.outcome"
	attrReason            = "nodeq.reason"
	attrDeadLetterReason  = "nodeq.dead_letter.reason"
	attrDelayMS           = "nodeq.delay_ms"
	attrBackoffCutShort   = "nodeq.backoff.cut_short"
	attrWorker            = "nodeq.worker"
	maxSpanText           = 512 // bytes of an error message or a hand-back's reason
	spanTaskPrefix        = "nodeq.task "
	spanAttemptPrefix     = "attempt "
	spanBackoff           = "backoff"
	spanSettlePrefix      = "settle "
	eventHandedBack       = "handed back"
	messagingSystemNATS   = "nats"
	messagingOperationRun = "process"
)

// taskTrace holds one delivery's spans: the task's (nodeq.task
// <node_type>, whose parent is the producer's span when the task carries a
// sound traceparent) and, under it, one per attempt, one per backoff wait
// between attempts and one for the settle step. The attempt's span is in
// the context the node runs with, so a Go handler or the http executor
// continues the trace. A nil *taskTrace (tracing off) does nothing and
// costs nothing. The spans carry identifiers, counts, kinds and error
// messages: never a payload, a parameter or a header's value.
type taskTrace struct {
	tracer  trace.Tracer
	ctx     context.Context // carries the task's span
	span    trace.Span
	attempt trace.Span // the attempt running, if any
	backoff trace.Span // the backoff wait under way, if any
	verdict *Verdict   // how the delivery ended, once settling
	// handedBack says why the task went back to the stream after all
	// (a dead letter whose record could not be stored); "" when it did not.
	handedBack string
}

// startTrace starts the delivery's span, nil when tracing is off. Its
// start is the delivery's receipt.
func (w *Worker) startTrace(j *job) *taskTrace {
	if w.o.Tracer == nil {
		return nil
	}
	parent := tracing.Extract(context.Background(), j.msg.Headers())
	subject := j.msg.Subject()
	ctx, span := w.o.Tracer.Start(parent, spanTaskPrefix+j.label,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(j.received),
		trace.WithAttributes(
			attribute.String(attrMessagingSystem, messagingSystemNATS),
			attribute.String(attrOperationType, messagingOperationRun),
			attribute.String(attrDestination, spanText(subject)),
			attribute.String(attrConsumerGroup, w.o.Names.Consumer),
			attribute.String(attrNodeType, spanText(w.o.Names.NodeTypeOf(subject))),
			attribute.Int(attrDelivery, j.deliveries),
			attribute.Int64(attrStreamSeq, int64(j.seq)),
			attribute.String(attrWorker, w.o.ID),
		))
	t := &taskTrace{tracer: w.o.Tracer, ctx: ctx, span: span}
	if id := t.traceID(); id != "" {
		j.log = j.log.With("trace_id", id)
	}
	return t
}

// startAttempt starts attempt n's span, ending the backoff wait before it,
// and returns runCtx carrying it.
func (t *taskTrace) startAttempt(runCtx context.Context, n int) context.Context {
	if t == nil {
		return runCtx
	}
	if !t.span.IsRecording() { // not sampled: the node continues the task span's (unsampled) trace
		return trace.ContextWithSpan(runCtx, t.span)
	}
	t.endBackoff(false)
	ctx, span := t.tracer.Start(trace.ContextWithSpan(runCtx, t.span), spanAttemptPrefix+strconv.Itoa(n),
		trace.WithAttributes(attribute.Int(attrAttempt, n)))
	t.attempt = span
	return ctx
}

// endAttempt ends the running attempt's span, with the error's kind and
// message when it failed.
func (t *taskTrace) endAttempt(err error) {
	if t == nil || t.attempt == nil {
		return
	}
	if err != nil {
		t.attempt.SetAttributes(attribute.String(attrErrorType, resilience.KindOf(err).String()))
		t.attempt.SetStatus(codes.Error, spanText(err.Error()))
	}
	t.attempt.End()
	t.attempt = nil
}

// startBackoff starts the span of the wait after attempt n failed.
func (t *taskTrace) startBackoff(n int, delay time.Duration) {
	if t == nil || !t.span.IsRecording() {
		return
	}
	_, t.backoff = t.tracer.Start(t.ctx, spanBackoff,
		trace.WithAttributes(attribute.Int(attrAttempt, n), attribute.Int64(attrDelayMS, delay.Milliseconds())))
}

// endBackoff ends the backoff wait's span, if one is under way; cutShort
// says shutdown ended it before the next attempt.
func (t *taskTrace) endBackoff(cutShort bool) {
	if t == nil || t.backoff == nil {
		return
	}
	if cutShort {
		t.backoff.SetAttributes(attribute.Bool(attrBackoffCutShort, true))
	}
	t.backoff.End()
	t.backoff = nil
}

// startSettle names the task's span after what the envelope says, starts
// the settle step's span (settle <outcome>) and returns the func that ends
// it.
func (t *taskTrace) startSettle(v Verdict, env *task.Envelope) func() {
	if t == nil {
		return func() {}
	}
	t.endAttempt(nil) // ended already; a node that panicked past it is not
	t.endBackoff(false)
	t.verdict = &v
	if !t.span.IsRecording() {
		return func() {}
	}
	if env != nil { // possibly partial and unvalidated: only sound identifiers
		var ids []attribute.KeyValue
		if id := soundID(env.ID); id != "" {
			ids = append(ids, attribute.String(attrTaskID, id), attribute.String(attrMessageID, id))
		}
		if id := soundID(env.NodeID); id != "" {
			ids = append(ids, attribute.String(attrNodeID, id))
		}
		if id := soundID(env.CorrelationID); id != "" {
			ids = append(ids, attribute.String(attrConversationID, id))
		}
		t.span.SetAttributes(ids...)
	}
	attrs := []attribute.KeyValue{attribute.String(attrOutcome, v.Verb.String()), attribute.Int(attrAttempts, v.Attempts)}
	if v.Err != nil {
		attrs = append(attrs, attribute.String(attrErrorType, v.Kind.String()))
	}
	switch v.Verb {
	case DeadLetter:
		attrs = append(attrs, attribute.String(attrDeadLetterReason, v.Reason))
	case Redeliver:
		attrs = append(attrs, attribute.Int64(attrDelayMS, v.Delay.Milliseconds()))
	case HandBack:
		attrs = append(attrs, attribute.String(attrReason, spanText(v.Reason)), attribute.Int64(attrDelayMS, v.Delay.Milliseconds()))
	}
	_, span := t.tracer.Start(t.ctx, spanSettlePrefix+v.Verb.String(), trace.WithAttributes(attrs...))
	if v.Verb == DeadLetter && v.Err != nil {
		span.SetStatus(codes.Error, spanText(v.Err.Error()))
	}
	return func() { span.End() }
}

// handBack notes that the task went back to the stream, and why: the
// settle step's own verdict, or a dead letter whose record could not be
// stored (the task span's outcome is then handed_back).
func (t *taskTrace) handBack(why string, delay time.Duration) {
	if t == nil {
		return
	}
	t.handedBack = spanText(why)
	t.span.AddEvent(eventHandedBack, trace.WithAttributes(attribute.String(attrReason, t.handedBack), attribute.Int64(attrDelayMS, delay.Milliseconds())))
}

// end ends the task's span with the delivery's outcome: an error status
// when the task was dead-lettered or redelivered.
func (t *taskTrace) end() {
	if t == nil {
		return
	}
	t.endAttempt(nil)
	t.endBackoff(false)
	if v := t.verdict; v != nil && t.span.IsRecording() {
		verb := v.Verb
		if t.handedBack != "" {
			verb = HandBack
		}
		attrs := []attribute.KeyValue{attribute.String(attrOutcome, verb.String()), attribute.Int(attrAttempts, v.Attempts)}
		switch verb {
		case DeadLetter:
			attrs = append(attrs, attribute.String(attrDeadLetterReason, v.Reason), attribute.String(attrErrorType, v.Kind.String()))
			t.span.SetStatus(codes.Error, "dead-lettered: "+v.Reason)
		case Redeliver:
			attrs = append(attrs, attribute.String(attrErrorType, v.Kind.String()))
			t.span.SetStatus(codes.Error, "redelivered: the delivery's attempts are spent")
		}
		t.span.SetAttributes(attrs...)
	}
	t.span.End()
}

// inject writes the task span's trace context into a message's headers
// (the result sent to the task's reply subject).
func (t *taskTrace) inject(h nats.Header) {
	if t == nil {
		return
	}
	tracing.Inject(t.ctx, h)
}

// traceID is the task's trace ID in hex, "" when tracing is off.
func (t *taskTrace) traceID() string {
	if t == nil {
		return ""
	}
	if sc := t.span.SpanContext(); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// spanText makes text fit for a span: valid UTF-8 (an exporter refuses a
// batch holding anything else, which would drop other tasks' spans) and at
// most maxSpanText bytes.
func spanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxSpanText {
		return s
	}
	cut := maxSpanText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
