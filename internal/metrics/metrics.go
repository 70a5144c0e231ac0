// Package metrics holds nodeq's Prometheus metrics. Every method is safe on
// a nil *Metrics, so code can record unconditionally.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Task outcomes, the values of the "outcome" label of nodeq_tasks_total.
const (
	Succeeded        = "succeeded"          // the node succeeded and the task was acked
	Retried          = "retried"            // an attempt failed transiently and is retried in process
	Redelivered      = "redelivered"        // attempts spent; handed back to JetStream for a later delivery
	DeadLettered     = "dead_lettered"      // the record is stored and the task removed
	DLQPublishFailed = "dlq_publish_failed" // the record was refused; the task stays in the task stream
	HandedBack       = "handed_back"        // given back unfinished (breaker, shutdown, a refused record at shutdown)
	Poison           = "poison"             // dead-lettered before running: earlier deliveries ended without an outcome
)

// UnknownNodeType is the node_type label value of every node type the
// consumer does not run, so that producers cannot create series at will.
const UnknownNodeType = "_unknown"

// Metrics are the consumer's metrics.
type Metrics struct {
	tasks              *prometheus.CounterVec
	duration           *prometheus.HistogramVec
	inFlight           prometheus.Gauge
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	attempts           *prometheus.HistogramVec
	paused             *prometheus.GaugeVec
	pull               prometheus.Histogram
	heldRecords        prometheus.Gauge
	inFlightBytes      prometheus.Gauge
	pullFailures       *prometheus.CounterVec
	prefetched         prometheus.Gauge
	ackResends         prometheus.Counter
	acksUnconfirmed    prometheus.Counter
	queueWait          *prometheus.HistogramVec
	streamPending      *prometheus.GaugeVec
	streamAckPending   *prometheus.GaugeVec
	streamRedelivered  *prometheus.GaugeVec
	deadLetters        *prometheus.CounterVec
	buildInfo          *prometheus.GaugeVec
	reg                prometheus.Registerer
}

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeq_tasks_total",
			Help: "Task events by node type and outcome (succeeded, retried, redelivered, dead_lettered, poison, dlq_publish_failed, handed_back).",
		}, []string{"node_type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodeq_task_duration_seconds",
			Help:    "Time from a delivery's first attempt to its outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1ms .. ~4.4min
		}, []string{"node_type"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodeq_tasks_in_flight",
			Help: "Tasks delivered to this process and not yet settled.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeq_breaker_state",
			Help: "Circuit breaker state per subscription: 0 closed, 1 open, 2 half-open.",
		}, []string{"subscription"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeq_breaker_transitions_total",
			Help: "Circuit breaker state changes per subscription, by the state entered.",
		}, []string{"subscription", "to"}),
	}
	m.attempts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodeq_task_attempts",
		Help:    "Attempts a delivery took to reach its outcome (success, redelivery or dead letter).",
		Buckets: []float64{1, 2, 3, 5, 8, 13},
	}, []string{"node_type"})
	m.paused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeq_subscription_paused",
		Help: "1 while the subscription's pulling is paused by its circuit breaker.",
	}, []string{"subscription"})
	m.pull = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "nodeq_pull_seconds",
		Help:    "Time from a pull request to its first message.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs .. ~26s
	})
	m.heldRecords = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeq_dlq_held_tasks",
		Help: "Tasks whose outcome is a dead letter the dead-letter stream refused: the process holds them and retries only the store.",
	})
	m.inFlightBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeq_inflight_bytes",
		Help: "Bytes of task messages this process holds or has asked the server for (consumer.max_inflight_bytes bounds it).",
	})
	m.pullFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeq_pull_failures_total",
		Help: "Failed pull requests by cause (no_responders, leadership_change, consumer_deleted, server_shutdown, timeout, disconnected, other_status, other).",
	}, []string{"cause"})
	m.prefetched = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodeq_tasks_prefetched",
		Help: "Tasks delivered to this process that wait for a worker (consumer.prefetch bounds them).",
	})
	m.ackResends = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodeq_ack_resends_total",
		Help: "Acks sent again because the server had not confirmed them in time.",
	})
	m.acksUnconfirmed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodeq_acks_unconfirmed_total",
		Help: "Acks the server never confirmed within ack_wait: their tasks may run again.",
	})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodeq_task_queue_wait_seconds",
		Help:    "Time from JetStream storing a task to its node starting to run, per delivery (a redelivery counts from the first store).",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 12), // 1ms .. ~70min
	}, []string{"node_type"})
	m.streamPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeq_stream_pending_tasks",
		Help: "Tasks stored in the stream and not yet delivered to any consumer process (the durable consumer's num_pending).",
	}, []string{"stream"})
	m.streamAckPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeq_stream_ack_pending_tasks",
		Help: "Tasks delivered and not yet acked or terminated, by every process (the durable consumer's num_ack_pending).",
	}, []string{"stream"})
	m.streamRedelivered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeq_stream_redelivered_tasks",
		Help: "Tasks delivered more than once and not yet acked or terminated (the durable consumer's num_redelivered).",
	}, []string{"stream"})
	m.deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeq_dead_letters_total",
		Help: "Dead-letter records stored, by node type and reason (invalid, unknown_node_type, permanent_error, retries_exhausted, deadline_exceeded, poison, other).",
	}, []string{"node_type", "reason"})
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeq_build_info",
		Help: "1, labelled with the version of the running nodeq build.",
	}, []string{"version"})
	m.reg = reg
	reg.MustRegister(m.tasks, m.duration, m.inFlight, m.breakerState, m.breakerTransitions, m.attempts, m.paused, m.pull, m.heldRecords,
		m.inFlightBytes, m.pullFailures, m.prefetched, m.ackResends, m.acksUnconfirmed,
		m.queueWait, m.streamPending, m.streamAckPending, m.streamRedelivered, m.deadLetters, m.buildInfo)
	return m
}

// QueueWait observes how long a delivery waited, from the time JetStream
// stored its task (its message metadata's timestamp) to started, when its
// node starts to run. A redelivered task still counts from that first
// store. An unknown (zero) stored time observes nothing; a negative wait,
// from clocks that disagree, counts as 0.
func (m *Metrics) QueueWait(nodeType string, stored, started time.Time) {
	if m == nil || stored.IsZero() {
		return
	}
	m.queueWait.WithLabelValues(nodeType).Observe(max(started.Sub(stored), 0).Seconds())
}

// StreamTasks is what the durable consumer's info says about the tasks of
// its stream.
type StreamTasks struct {
	Pending     uint64 // stored, not yet delivered (num_pending)
	AckPending  uint64 // delivered, not yet acked or terminated (num_ack_pending)
	Redelivered uint64 // delivered more than once, not yet acked or terminated (num_redelivered)
}

// StreamTasks sets the stream gauges of the task stream named stream.
func (m *Metrics) StreamTasks(stream string, t StreamTasks) {
	if m != nil {
		m.streamPending.WithLabelValues(stream).Set(float64(t.Pending))
		m.streamAckPending.WithLabelValues(stream).Set(float64(t.AckPending))
		m.streamRedelivered.WithLabelValues(stream).Set(float64(t.Redelivered))
	}
}

// DeadLetter counts a dead-letter record stored. A reason outside the
// fixed set (Reasons) counts as ReasonOther, so that the label stays bounded.
func (m *Metrics) DeadLetter(nodeType, reason string) {
	if m != nil {
		m.deadLetters.WithLabelValues(nodeType, reasonLabel(reason)).Inc()
	}
}

// Task counts one task event.
func (m *Metrics) Task(nodeType, outcome string) {
	if m != nil {
		m.tasks.WithLabelValues(nodeType, outcome).Inc()
	}
}

// Duration observes how long a delivery took to reach its outcome.
func (m *Metrics) Duration(nodeType string, d time.Duration) {
	if m != nil {
		m.duration.WithLabelValues(nodeType).Observe(d.Seconds())
	}
}

// InFlight adds delta to the in-flight gauge.
func (m *Metrics) InFlight(delta float64) {
	if m != nil {
		m.inFlight.Add(delta)
	}
}

// HeldRecords adds delta to the gauge of tasks holding a refused dead-letter record.
func (m *Metrics) HeldRecords(delta float64) {
	if m != nil {
		m.heldRecords.Add(delta)
	}
}

// InFlightBytes sets the gauge of task bytes held or asked for.
func (m *Metrics) InFlightBytes(n int64) {
	if m != nil {
		m.inFlightBytes.Set(float64(n))
	}
}

// Breaker records a breaker entering state (0 closed, 1 open, 2 half-open; to is its name).
func (m *Metrics) Breaker(subscription string, state int, to string) {
	if m != nil {
		m.breakerState.WithLabelValues(subscription).Set(float64(state))
		m.breakerTransitions.WithLabelValues(subscription, to).Inc()
	}
}

// BreakerStarted shows a subscription's breaker as closed, its pulling as
// not paused and no transition counted, from start-up.
func (m *Metrics) BreakerStarted(subscription string) {
	if m != nil {
		m.breakerState.WithLabelValues(subscription).Set(0)
		m.paused.WithLabelValues(subscription).Set(0)
		for _, to := range breakerStates {
			m.breakerTransitions.WithLabelValues(subscription, to)
		}
	}
}

// Prefetched sets the gauge of delivered tasks waiting for a worker.
func (m *Metrics) Prefetched(n int) {
	if m != nil {
		m.prefetched.Set(float64(n))
	}
}

// AckResent counts an ack sent again.
func (m *Metrics) AckResent() {
	if m != nil {
		m.ackResends.Inc()
	}
}

// AckUnconfirmed counts an ack the server never confirmed.
func (m *Metrics) AckUnconfirmed() {
	if m != nil {
		m.acksUnconfirmed.Inc()
	}
}

// Attempts observes how many attempts a delivery took.
func (m *Metrics) Attempts(nodeType string, n int) {
	if m != nil {
		m.attempts.WithLabelValues(nodeType).Observe(float64(n))
	}
}

// Paused records whether a subscription's pulling is paused.
func (m *Metrics) Paused(subscription string, paused bool) {
	if m != nil {
		v := 0.0
		if paused {
			v = 1
		}
		m.paused.WithLabelValues(subscription).Set(v)
	}
}

// Pull observes the wait of a pull request that delivered messages.
func (m *Metrics) Pull(wait time.Duration, got int) {
	if m != nil && got > 0 {
		m.pull.Observe(wait.Seconds())
	}
}

// PullFailure counts one failed pull request by its cause (one of
// queue's Pull* causes: a small fixed set).
func (m *Metrics) PullFailure(cause string) {
	if m != nil {
		m.pullFailures.WithLabelValues(cause).Inc()
	}
}

// DLQDepth registers nodeq_dlq_messages, read by depth at every scrape
// (a negative value means the stream could not be read).
func (m *Metrics) DLQDepth(depth func() float64) {
	if m != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nodeq_dlq_messages",
			Help: "Records in the dead-letter stream (-1 when it cannot be read).",
		}, depth))
	}
}
