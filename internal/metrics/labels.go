package metrics

import "slices"

// InvalidNodeType is the node_type label value of a task whose subject
// names no valid node type (queue.InvalidNodeType).
const InvalidNodeType = "_invalid"

// Dead-letter reasons, the values of the "reason" label of
// nodeq_dead_letters_total: dlq's Reason* codes, and ReasonOther for any
// code outside them.
const (
	ReasonInvalid         = "invalid"
	ReasonUnknownNodeType = "unknown_node_type"
	ReasonPermanent       = "permanent_error"
	ReasonExhausted       = "retries_exhausted"
	ReasonDeadline        = "deadline_exceeded"
	ReasonPoison          = "poison"
	ReasonOther           = "other"
)

// The fixed label values. The tests check them against the packages that
// own them (dlq's reasons, queue's pull causes, resilience's states) and
// against docs/operations.md.
var (
	outcomes      = []string{Succeeded, Retried, Redelivered, DeadLettered, DLQPublishFailed, HandedBack, Poison}
	reasons       = []string{ReasonInvalid, ReasonUnknownNodeType, ReasonPermanent, ReasonExhausted, ReasonDeadline, ReasonPoison}
	breakerStates = []string{"closed", "open", "half-open"}
	pullCauses    = []string{"no_responders", "leadership_change", "consumer_deleted", "server_shutdown", "timeout", "disconnected", "other_status", "other"}
)

// reasonLabel is reason if it is one of the fixed reasons, else ReasonOther.
func reasonLabel(reason string) string {
	if slices.Contains(reasons, reason) {
		return reason
	}
	return ReasonOther
}

// Labels are the label values of one consumer's series that depend on its
// configuration.
type Labels struct {
	// NodeTypes are the node types the consumer runs.
	NodeTypes []string
	// Stream is the task stream.
	Stream string
	// Version is the build's version.
	Version string
}

// Declare creates the series of every bounded label value at zero, so that
// each exists from start-up (a rate or an alert over a series that does not
// exist yet sees nothing): nodeq_tasks_total and nodeq_dead_letters_total for
// every node type (the registered ones, UnknownNodeType and
// InvalidNodeType) by every outcome and reason; the duration, queue-wait and
// attempt histograms of the registered node types (attempts also of the
// other two: a task that never ran is dead-lettered after 0 attempts);
// nodeq_pull_failures_total by every cause; the stream gauges; and
// nodeq_build_info at 1. The breaker's series come with BreakerStarted,
// nodeq_dlq_messages with DLQDepth.
func (m *Metrics) Declare(l Labels) {
	if m == nil {
		return
	}
	all := append(slices.Clone(l.NodeTypes), UnknownNodeType, InvalidNodeType)
	for _, nt := range all {
		for _, o := range outcomes {
			m.tasks.WithLabelValues(nt, o)
		}
		for _, r := range reasons {
			m.deadLetters.WithLabelValues(nt, r)
		}
		m.attempts.WithLabelValues(nt)
	}
	for _, nt := range l.NodeTypes {
		m.duration.WithLabelValues(nt)
		m.queueWait.WithLabelValues(nt)
	}
	for _, c := range pullCauses {
		m.pullFailures.WithLabelValues(c)
	}
	m.StreamTasks(l.Stream, StreamTasks{})
	m.buildInfo.WithLabelValues(l.Version).Set(1)
}
