// Package worker settles one delivered task: decode it, run its node, reply,
// and ack it or dead-letter it. It holds the rule that a message is acked or
// terminated only after its outcome is durable.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/version"
)

// Replier publishes results to reply subjects; *nats.Conn is one.
type Replier interface {
	PublishMsg(m *nats.Msg) error
	// MaxPayload is the largest message the server accepts.
	MaxPayload() int64
}

// Options configure a Worker. Registry and DLQ are required.
type Options struct {
	// LogSuccess logs each succeeded task at info instead of debug
	// (log.task_success).
	LogSuccess bool
	// Names are resolved (queue.Names.Resolve); the zero value means
	// queue.DefaultNames().
	Names    queue.Names
	Registry *executor.Registry
	DLQ      *dlq.Writer
	// Replier sends results to tasks' reply subjects; nil means no replies.
	Replier Replier
	// Replies decides which reply subjects a task may name. A task naming
	// another is dead-lettered as invalid and nothing is published to it.
	// Default: queue.DefaultReplySubjects under Names.
	Replies *queue.ReplySubjects
	// MaskHeaders are the task headers whose values dead-letter records do
	// not keep. Default dlq.DefaultMaskedHeaders.
	MaskHeaders []string
	// MaxPayload caps a task message's body in bytes before decoding. Default 1 MiB.
	MaxPayload int
	// Acks, if set, sends acks and collects their confirmations off the
	// worker's path: the worker goes on to its next task at once, and an
	// ack not confirmed in time is sent again, logged and counted. This is
	// the consumer's default (consumer.ack: confirmed).
	Acks *queue.AckConfirmer
	// AckAsync, without Acks, acks without any confirmation: a lost ack (a
	// dropped connection) then means the task runs again. Without Acks or
	// AckAsync the worker waits for each confirmation (DoubleAck).
	AckAsync bool
	// AckWait is the consumer's AckWait; the worker signals progress at a
	// third of it while a node runs. Default queue.DefaultAckWait.
	AckWait time.Duration
	// KeptAlive says the caller keeps every message alive while its
	// Handle runs (a queue.Puller does, with one sweep for all): the
	// worker then sends no progress signals of its own.
	KeptAlive bool
	// RetryDelay is how long a task whose dead-letter record could not be
	// stored waits before it is delivered again. Default 5s.
	RetryDelay time.Duration
	// Retry is the in-process retry policy of node types without their
	// own. Default resilience.DefaultPolicy().
	Retry resilience.Policy
	// Redelivery decides what happens once a delivery's attempts are spent
	// on transient errors. Default resilience.DefaultRedelivery().
	Redelivery resilience.Redelivery
	// Breaker, if set, is acquired before a task runs and told its outcome.
	Breaker Breaker
	// Ledger, if set, records the deliveries of a task that ended in a
	// hand-back or a redelivery, so that a task whose deliveries keep
	// ending without an outcome is found (a poison task), and hand-backs
	// are not charged toward Redelivery.MaxDeliveries.
	Ledger Ledger
	// MaxHeld caps the tasks this process holds, each on its worker,
	// because the dead-letter stream refuses their records. Over the cap a
	// task is handed back with a growing delay instead (its node runs
	// again then), so that refused records cannot take every worker.
	// Default 1; the consumer sets half its workers.
	MaxHeld int
	// PoisonAfter is how many runs of a task alone in the process (after
	// a delivery that ended without an outcome) may end without an outcome
	// (the process died, hung or lost its connection) before the next
	// delivery dead-letters it, with reason poison, without running it. It
	// needs a Ledger. Default DefaultPoisonAfter.
	PoisonAfter int
	// Metrics, if set, count task outcomes.
	Metrics *metrics.Metrics
	// Tracer, if set, records a span per delivery, attempt, backoff wait
	// and settle step (trace.go), continuing the trace a task's
	// traceparent names; results carry the task span's traceparent. nil
	// records nothing and reads no trace context.
	Tracer trace.Tracer
	// ID identifies this process in results and records. Default host/pid.
	ID     string
	Logger *slog.Logger
}

// DefaultPoisonAfter is the default Options.PoisonAfter.
const DefaultPoisonAfter = 3

// soloAfter is how many deliveries of a task must have ended without an
// outcome before it runs alone. One such delivery is common and rarely the
// task's fault (a lost connection, a node of the cluster lost, a process
// killed with others' tasks): those run with the rest. A second one makes
// the task a suspect.
const soloAfter = 2

// Breaker is the circuit breaker a worker asks before it runs a task:
// *resilience.Breaker (one process), or *fleet.Breaker (a fleet of them).
type Breaker interface {
	// TryAcquire reports at once whether a task may run now, and whether
	// as the half-open probe; when ok, report the task's outcome with
	// report, exactly once.
	TryAcquire() (report func(resilience.Outcome), probe bool, ok bool)
	// State is the breaker's state, for the log line of a hand-back.
	State() resilience.State
	// MaxCooldown is the longest the breaker stays open: how long a task
	// whose probe failed waits before it is delivered again.
	MaxCooldown() time.Duration
}

// Ledger is the delivery ledger the worker consults and updates;
// *queue.DeliveryLedger is one.
type Ledger interface {
	Tally(ctx context.Context, seq uint64, deliveries int) (queue.Tally, bool, error)
	Add(ctx context.Context, seq uint64, d queue.Tally) error
	Forget(ctx context.Context, seq uint64) error
	// ReportHeld tells the fleet (producer status) how many tasks this
	// process holds because the dead-letter stream refuses their records.
	ReportHeld(ctx context.Context, process string, r queue.HeldReport) error
}

// Worker handles delivered task messages. It is safe for concurrent use.
type Worker struct {
	o    Options
	held heldRecords
	iso  isolation
}

// New returns a Worker.
func New(o Options) *Worker {
	if o.Names == (queue.Names{}) {
		o.Names = queue.DefaultNames()
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = queue.DefaultMaxMsgSize
	}
	if o.AckWait <= 0 {
		o.AckWait = queue.DefaultAckWait
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 5 * time.Second
	}
	if o.ID == "" {
		o.ID = DefaultID()
	}
	if o.Retry == nil {
		o.Retry = resilience.DefaultPolicy()
	}
	if o.Redelivery.MaxDeliveries <= 0 {
		o.Redelivery = resilience.DefaultRedelivery()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Replies == nil {
		o.Replies, _ = queue.NewReplySubjects(o.Names, nil) // the default list is valid
	}
	if o.MaskHeaders == nil {
		o.MaskHeaders = dlq.DefaultMaskedHeaders
	}
	if o.PoisonAfter <= 0 {
		o.PoisonAfter = DefaultPoisonAfter
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = 1
	}
	return &Worker{o: o}
}

// label is the node type as a metric label value: node types this
// consumer does not run share one value, so that producers cannot create
// series at will. Only dead-lettering sees such node types; every other
// outcome belongs to a task whose node ran.
func (w *Worker) label(nodeType string) string {
	if nodeType == queue.InvalidNodeType {
		return nodeType
	}
	if _, ok := w.o.Registry.Lookup(nodeType); ok {
		return nodeType
	}
	return metrics.UnknownNodeType
}

// DefaultID returns "hostname/pid".
func DefaultID() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}

// failure describes why a task is being dead-lettered.
type failure struct {
	reason   string
	kind     resilience.Kind
	err      error
	first    time.Time
	attempts int
}

// job is one delivery being settled.
type job struct {
	msg        jetstream.Msg
	seq        uint64 // stream sequence, 0 when unknown
	deliveries int    // JetStream's delivery count, this one included
	tally      queue.Tally
	tracked    bool // the ledger has an entry for the task
	solo       bool // the task runs alone in the process (see isolation)
	// leave ends the task's run in the isolation gate; settling calls it,
	// so that what follows a run (a held record) does not keep others out.
	leave func()
	// stopping ends when shutdown begins: it bounds waits that are not the
	// node's work.
	stopping context.Context
	// interrupted ends when a shutdown runs out of time (Handle's ctx).
	interrupted context.Context

	received time.Time
	stored   time.Time // when JetStream stored the task (its metadata); zero when unknown
	first    time.Time // the first failure (or the start, or receipt) for records
	label    string    // the node type as a metric label
	log      taskLog
	env      *task.Envelope // as far as it was decoded; nil before
	poison   bool           // dead-lettered as a poison task
	report   func(resilience.Outcome)
	result   *nats.Msg // the success result to publish
	took     time.Duration
	probe    bool // the task ran as the breaker's probe
	probed   int  // 1 when its hand-back records a failed probe

	// trace holds the delivery's spans; nil when tracing is off.
	trace *taskTrace
}

// probedNow is 1 when the verdict ends a failed probe run.
func (j *job) probedNow(v Verdict) int {
	if j.probe && v.Breaker == resilience.OutcomeFailure {
		return 1
	}
	return 0
}

// soloDone is 1 when the task ran alone and now reaches an outcome.
func (j *job) soloDone() int {
	if j.solo {
		return 1
	}
	return 0
}

// endRun leaves the isolation gate, if the task entered it.
func (j *job) endRun() {
	if j.leave != nil {
		j.leave()
		j.leave = nil
	}
}

// Handle settles one delivery: run (if the task may run), decide, settle.
// It is a queue.Handler.
func (w *Worker) Handle(ctx context.Context, d queue.Delivery) {
	j := w.newJob(ctx, d)
	j.trace = w.startTrace(j)
	defer j.trace.end()
	w.o.Metrics.InFlight(1)
	defer w.o.Metrics.InFlight(-1)
	// From here on, JetStream must not redeliver the task elsewhere while
	// it waits to run alone, runs, or backs off.
	if !w.o.KeptAlive {
		defer w.keepAlive(j.msg, j.log)()
	}
	defer j.endRun()
	w.settle(j, w.run(j))
}

// newJob reads what the delivery says about itself.
func (w *Worker) newJob(ctx context.Context, d queue.Delivery) *job {
	j := &job{msg: d.Msg, deliveries: 1, stopping: d.Stopping, interrupted: ctx, received: time.Now()}
	if j.stopping == nil {
		j.stopping = context.Background() // called outside a Puller: never stopping
	}
	if j.interrupted == nil {
		j.interrupted = context.Background()
	}
	if meta, _ := d.Msg.Metadata(); meta != nil {
		j.seq, j.deliveries, j.stored = meta.Sequence.Stream, int(meta.NumDelivered), meta.Timestamp
	}
	j.first = j.received
	j.label = w.label(w.o.Names.NodeTypeOf(d.Msg.Subject()))
	j.log = taskLog{l: w.o.Logger, attrs: []any{"stream_seq", j.seq, "delivery", j.deliveries}}
	return j
}

// run takes the task as far as it goes, runs its node if it may, and
// decides how the delivery ends.
func (w *Worker) run(j *job) Verdict {
	// Before anything else reads the task: it may be what took down the
	// processes that had it before.
	if poison := w.lookUp(j, j.log); poison != nil {
		j.poison = true
		return refused(poison.reason, poison.kind, poison.err)
	}
	if n := j.tally.Unsettled(j.deliveries); n >= soloAfter {
		// Earlier deliveries ended without an outcome: run alone, decoding
		// included, so that only this task can be blamed if it happens again.
		leave, err := w.iso.enter(j.stopping, true)
		if err != nil {
			return handedBack("shutdown while the task waited to run alone")
		}
		j.leave, j.solo = leave, true
		w.note(j, queue.Tally{Solo: 1}, j.log)
		j.log.Warn("running the task alone in this process: an earlier delivery ended without an outcome",
			"deliveries_without_outcome", n, "solo_runs_without_outcome", j.tally.SoloCrashes(), "poison_after", w.o.PoisonAfter)
	}

	env, bad := w.decode(j.msg)
	j.env = env
	if bad != nil {
		return refused(bad.reason, bad.kind, bad.err)
	}
	j.label = env.NodeType
	j.log = j.log.With("task_id", env.ID, "node_id", env.NodeID, "node_type", env.NodeType)
	node, ok := w.o.Registry.Lookup(env.NodeType)
	if !ok {
		j.label = metrics.UnknownNodeType
		return refused(dlq.ReasonUnknownNodeType, resilience.Manifest,
			fmt.Errorf("unknown node type %q: this consumer runs %s", env.NodeType, strings.Join(w.o.Registry.Types(), ", ")))
	}
	if !env.Deadline.IsZero() && !j.received.Before(env.Deadline) {
		return refused(dlq.ReasonDeadline, resilience.Other,
			fmt.Errorf("deadline %s passed before the task started", env.Deadline.Format(time.RFC3339Nano)))
	}

	probe := false
	if w.o.Breaker != nil {
		report, isProbe, ok := w.o.Breaker.TryAcquire()
		if !ok {
			// Open, or another task probes: no task starts here. Back to the
			// stream at once, uncharged, where a healthy process may take it.
			return handedBack("circuit breaker " + w.o.Breaker.State().String())
		}
		j.report, probe, j.probe = report, isProbe, isProbe
	}
	if !j.solo {
		leave, err := w.iso.enter(j.stopping, false)
		if err != nil {
			return handedBack("shutdown while the task waited for a task running alone")
		}
		j.leave = leave
	}

	policy := node.Retry
	if policy == nil {
		policy = w.o.Retry
	}
	if probe {
		j.log.Info("circuit breaker half-open: this task is the probe")
	}
	runCtx := j.interrupted
	if !env.Deadline.IsZero() {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithDeadline(runCtx, env.Deadline)
		defer cancel()
	}
	start := time.Now()
	w.o.Metrics.QueueWait(j.label, j.stored, start)
	var out []byte
	var firstFailure time.Time
	r := runNode(j.interrupted, runCtx, j.stopping, policy, func(n int) error {
		var err error
		out, err = node.Run(executor.WithAttempt(j.trace.startAttempt(runCtx, n), executor.Attempt{Number: n, Delivery: j.deliveries}), env)
		j.trace.endAttempt(err)
		if err != nil && firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		return err
	}, func(n int, err error, delay time.Duration) {
		j.log.Info("attempt failed; retrying", "attempt", n, "error_kind", resilience.KindOf(err).String(), "err", err, "retry_in", delay)
		w.o.Metrics.Task(env.NodeType, metrics.Retried)
		j.trace.startBackoff(n, delay)
	})
	j.trace.endBackoff(r.stopped)
	r.probe, r.firstProbe = probe, j.tally.Probed == 0
	j.took = time.Since(start)
	if r.err == nil {
		j.first = start
		j.result, r.resultErr = w.result(env, &task.Result{TaskID: env.ID, NodeID: env.NodeID, NodeType: env.NodeType, OK: true, Output: out,
			Attempts: r.attempts, DurationMS: j.took.Milliseconds(), Worker: w.o.ID}, j.msg)
	} else {
		j.first = firstFailure
	}
	// Deliveries handed back (breaker, shutdown) are not the task's fault.
	var probeDelay time.Duration
	if w.o.Breaker != nil {
		probeDelay = w.o.Breaker.MaxCooldown()
	}
	return decide(r, j.tally.Charged(j.deliveries), w.o.Redelivery, probeDelay)
}

// settle carries out a verdict: the breaker report, the effects on the
// message and the stores, the metrics and the log line.
func (w *Worker) settle(j *job, v Verdict) {
	defer j.trace.startSettle(v, j.env)()
	if j.report != nil {
		j.report(v.Breaker)
	}
	log := j.log
	if v.Attempts > 0 {
		log = log.With("attempt", v.Attempts)
	}
	switch v.Verb {
	case Ack:
		w.publishResult(j, j.result, log)
		w.ack(j, log)
		w.o.Metrics.Task(j.label, Ack.String())
		w.o.Metrics.Attempts(j.label, v.Attempts)
		w.o.Metrics.Duration(j.label, j.took)
		if w.o.LogSuccess {
			log.Info("task succeeded", "outcome", Ack, "duration", j.took)
		} else {
			log.Debug("task succeeded", "outcome", Ack, "duration", j.took)
		}
	case Redeliver:
		log.Warn("task redelivered: its attempts are spent", "outcome", Redeliver, "error_kind", v.Kind.String(), "err", v.Err,
			"redeliver_in", v.Delay, "max_deliveries", w.o.Redelivery.MaxDeliveries)
		j.endRun()
		w.note(j, queue.Tally{Redelivered: 1, SoloDone: j.soloDone(), Probed: j.probedNow(v)}, log)
		if err := j.msg.NakWithDelay(v.Delay); err != nil {
			log.Warn("hand-back failed; the task returns after AckWait", "nak_err", err)
		}
		w.o.Metrics.Task(j.label, Redeliver.String())
		w.o.Metrics.Attempts(j.label, v.Attempts)
	case HandBack:
		if v.Err != nil {
			log = log.With("err", v.Err)
		}
		j.probed = j.probedNow(v)
		w.handBack(j, j.label, v.Delay, v.Reason, log)
	case DeadLetter:
		if j.poison {
			w.o.Metrics.Task(j.label, metrics.Poison)
		}
		w.deadLetter(j, j.env, &failure{reason: v.Reason, kind: v.Kind, err: v.Err, first: j.first, attempts: v.Attempts}, log)
	}
}

// HandBack returns to JetStream a message that will not be handled (it
// came after its pull request ended, or after shutdown began), noting in
// the ledger that the delivery is not the task's fault. It is a
// queue.PullOptions.HandBack.
func (w *Worker) HandBack(msg jetstream.Msg) {
	j := &job{msg: msg, deliveries: 1}
	if meta, err := msg.Metadata(); err == nil {
		j.seq, j.deliveries = meta.Sequence.Stream, int(meta.NumDelivered)
	}
	log := taskLog{l: w.o.Logger, attrs: []any{"stream_seq", j.seq, "delivery", j.deliveries}}
	w.handBack(j, w.label(w.o.Names.NodeTypeOf(msg.Subject())), 0, "it arrived after its pull request ended or shutdown began", log)
}

// handBack returns the message to JetStream for redelivery after delay,
// noting in the ledger that this delivery is not the task's fault.
// nodeType is a metric label.
func (w *Worker) handBack(j *job, nodeType string, delay time.Duration, why string, log taskLog) {
	j.endRun()
	j.trace.handBack(why, delay)
	log.Warn("task handed back: "+why, "outcome", HandBack, "redeliver_in", delay)
	w.o.Metrics.Task(nodeType, HandBack.String())
	w.note(j, queue.Tally{HandedBack: 1, SoloDone: j.soloDone(), Probed: j.probed}, log)
	msg := j.msg
	var err error
	if delay > 0 {
		err = msg.NakWithDelay(delay)
	} else {
		err = msg.Nak()
	}
	if err != nil {
		log.Warn("hand-back failed; the task returns after AckWait", "nak_err", err)
	}
}

// decode reads and checks the envelope. On failure it returns the envelope
// as far as it was read (possibly nil, never validated) and a failure.
func (w *Worker) decode(msg jetstream.Msg) (*task.Envelope, *failure) {
	data := msg.Data()
	invalid := func(err error) *failure {
		return &failure{reason: dlq.ReasonInvalid, kind: resilience.Marshaling, err: err}
	}
	if len(data) > w.o.MaxPayload {
		return nil, invalid(fmt.Errorf("task message of %d bytes exceeds the %d-byte limit (consumer.max_payload)", len(data), w.o.MaxPayload))
	}
	env, err := task.Decode(data, msg.Headers().Get(queue.HeaderContentType))
	if err != nil {
		return env, invalid(err)
	}
	if err := env.Validate(); err != nil {
		return env, invalid(err)
	}
	if subj := w.o.Names.NodeTypeOf(msg.Subject()); subj != env.NodeType {
		return env, invalid(fmt.Errorf("node_type %q does not match subject %s", env.NodeType, msg.Subject()))
	}
	if env.ReplyTo != "" {
		if err := w.o.Replies.Check(env.ReplyTo); err != nil {
			return env, &failure{reason: dlq.ReasonInvalid, kind: resilience.Manifest, err: err}
		}
	}
	return env, nil
}

// keepAlive sends InProgress at a third of AckWait until the returned func
// is called. It uses a self-rearming timer, not a goroutine per task.
func (w *Worker) keepAlive(msg jetstream.Msg, log taskLog) func() {
	// At most every maxKeepAlive whatever AckWait says: a consumer whose
	// ack_wait another process lowered since this one started (an upgrade
	// rolling through the fleet) still hears from this one in time.
	interval := KeepAliveInterval(w.o.AckWait)
	var mu sync.Mutex
	stopped := false
	var timer *time.Timer
	mu.Lock()
	timer = time.AfterFunc(interval, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if err := msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			log.Warn("could not extend the ack deadline", "err", err)
		}
		timer.Reset(interval)
	})
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}

func (w *Worker) ack(j *job, log taskLog) {
	j.endRun()
	if w.o.Acks != nil {
		err := w.o.Acks.Ack(j.msg, func(confirmed bool, resends int) {
			if !confirmed {
				w.o.Metrics.AckUnconfirmed()
				log.Warn("ack not confirmed within ack_wait; the task may be delivered again", "sends", resends+1)
				return
			}
			if resends > 0 {
				log.Info("ack confirmed after sending it again", "sends", resends+1)
			}
			if j.tracked {
				go w.forget(j, log) // off the confirmations' goroutine
			}
		})
		if err != nil {
			log.Warn("ack not sent; the task may be delivered again", "err", err)
		}
		return
	}
	if w.o.AckAsync {
		// Unconfirmed: the ledger entry stays (it expires by itself), so
		// that a lost ack does not make the task's next delivery look like
		// one after deliveries without an outcome.
		if err := j.msg.Ack(); err != nil {
			log.Warn("ack not sent; the task may be delivered again", "err", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := j.msg.DoubleAck(ctx)
	cancel()
	if err != nil {
		if !w.resendAck(j, err, log) {
			return
		}
	}
	w.forget(j, log)
}

// resendAck sends an unconfirmed ack again until the server confirms it,
// for at most AckWait. An ack to the same $JS.ACK subject stays valid while
// the server holds the delivery, and keepAlive (still running) keeps it
// held meanwhile; so an ack lost with a connection or during a consumer
// leader election is confirmed after the reconnect or the election instead
// of the task running again after AckWait. It reports whether the ack was
// confirmed.
func (w *Worker) resendAck(j *job, err error, log taskLog) bool {
	log.Warn("ack not confirmed; sending it again until the server confirms it", "err", err, "for", w.o.AckWait)
	deadline := time.Now().Add(w.o.AckWait)
	pause := 100 * time.Millisecond
	for tries := 1; ; tries++ {
		if errors.Is(err, nats.ErrConnectionClosed) {
			break // closed for good: nothing more can be sent
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		wait := time.NewTimer(min(pause, left))
		select {
		case <-wait.C:
		case <-j.interrupted.Done(): // a shutdown ran out of time
			wait.Stop()
			log.Warn("ack not confirmed before the shutdown timeout; the task may be delivered again", "err", err)
			return false
		}
		pause = min(pause*2, time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, max(time.Until(deadline), 100*time.Millisecond)))
		err = j.msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			log.Info("ack confirmed after sending it again", "sends", tries+1)
			return true
		}
	}
	log.Warn("ack not confirmed; the task may be delivered again", "err", err)
	return false
}

// deadLetter stores a record for the task and only then terminates the
// original. If the dead-letter stream refuses the record (full, gone, not
// permitted), the outcome is kept: the task is held, kept alive, and only
// the store is retried, with growing waits, until it succeeds or shutdown
// begins; then the task is handed back and its node runs again on its next
// delivery.
func (w *Worker) deadLetter(j *job, env *task.Envelope, f *failure, log taskLog) {
	j.endRun()
	msg := j.msg
	now := time.Now().UTC()
	meta, _ := msg.Metadata()
	rec := &dlq.Record{
		Reason: f.reason, ErrorKind: f.kind.String(), Error: f.err.Error(), Causes: dlq.CauseChain(f.err),
		Attempts: f.attempts, FirstFailure: f.first.UTC(), LastFailure: now, Worker: w.o.ID,
		Subject: msg.Subject(), NodeqVersion: version.String(), Headers: dlq.MaskHeaders(msg.Headers(), w.o.MaskHeaders), Data: msg.Data(),
		NodeType: w.o.Names.NodeTypeOf(msg.Subject()), TraceID: j.trace.traceID(),
	}
	var pe *executor.PanicError
	if errors.As(f.err, &pe) {
		rec.Stack = pe.Stack
	}
	if meta != nil {
		rec.Stream, rec.Sequence, rec.Deliveries = meta.Stream, meta.Sequence.Stream, int(meta.NumDelivered)
	}
	if env != nil { // possibly a partial, unvalidated envelope: keep only sound identifiers
		rec.TaskID, rec.NodeID, rec.CorrelationID = soundID(env.ID), soundID(env.NodeID), soundID(env.CorrelationID)
	}
	if rec.TaskID == "" {
		rec.TaskID = soundID(msg.Headers().Get(nats.MsgIdHdr)) // producers often use the task id
	}
	log = log.With("reason", f.reason, "error_kind", rec.ErrorKind, "err", rec.Error)
	if !w.store(j, rec, log) {
		return
	}
	if env != nil {
		res, err := w.result(env, &task.Result{TaskID: rec.TaskID, NodeID: rec.NodeID, NodeType: rec.NodeType, ErrorKind: rec.ErrorKind,
			Error: rec.Error, Attempts: f.attempts, DurationMS: now.Sub(f.first).Milliseconds(), Worker: w.o.ID}, msg)
		if err != nil {
			log.Warn("could not report the failure to the task's reply subject", "err", err)
		}
		w.publishResult(j, res, log)
	}
	// Terminations are not confirmed: a tracked task's ledger entry stays
	// and expires by itself.
	if err := msg.TermWithReason(f.reason); err != nil {
		log.Warn("terminate not sent; the task returns and its record is deduplicated", "term_err", err)
	}
	w.o.Metrics.Task(w.label(rec.NodeType), DeadLetter.String())
	w.o.Metrics.DeadLetter(w.label(rec.NodeType), f.reason)
	w.o.Metrics.Attempts(w.label(rec.NodeType), f.attempts)
	log.Warn("task dead-lettered", "outcome", DeadLetter, "dlq_subject", w.o.Names.DLQSubject(rec.NodeType), "duration", now.Sub(f.first))
}

// maxKeepAlive caps the interval of keepAlive's progress signals.
const maxKeepAlive = 3 * time.Second

// KeepAliveInterval is how often a task in the process tells the server it
// is in progress, for a consumer whose AckWait is ackWait: a third of it,
// at most every 3s whatever AckWait says (a consumer whose ack_wait
// another process lowered since this one started still hears in time).
func KeepAliveInterval(ackWait time.Duration) time.Duration {
	return min(max(ackWait/3, 100*time.Millisecond), maxKeepAlive)
}

// AckWait is the consumer's AckWait the worker keeps tasks alive against.
func (w *Worker) AckWait() time.Duration { return w.o.AckWait }

// maxStoreWait caps the wait between two tries to store a refused record,
// and maxHandBackDelay the delay of a task handed back because too many
// are held.
const (
	maxStoreWait     = 30 * time.Second
	maxHandBackDelay = 5 * time.Minute
)

// store writes the record, holding the task while the dead-letter stream
// refuses it. It reports whether the record is stored; when it is not,
// the task has been handed back.
func (w *Worker) store(j *job, rec *dlq.Record, log taskLog) bool {
	wait := w.o.RetryDelay
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := w.o.DLQ.Write(ctx, rec)
		cancel()
		if err == nil {
			if try > 1 {
				w.held.release(w, true, log)
				w.reportHeld()
			}
			return true
		}
		if try == 1 {
			w.o.Metrics.Task(w.label(rec.NodeType), metrics.DLQPublishFailed)
			if !w.held.hold(w, err, log) {
				// Enough workers hold refused records already.
				delay := min(w.o.RetryDelay<<min(j.tally.HandedBack, 6), maxHandBackDelay)
				w.handBack(j, w.label(rec.NodeType), delay, "dead-letter record not stored and consumer.workers/2 tasks are held already; the node runs again on a later delivery", log)
				return false
			}
		} else {
			w.held.failed(w, err)
		}
		w.reportHeld()
		log.Debug("dead-letter record not stored; the outcome is kept and the store retried", "dlq_err", err, "try", try, "retry_in", wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-j.stopping.Done():
			timer.Stop()
			w.held.release(w, false, log)
			w.reportHeld()
			w.handBack(j, w.label(rec.NodeType), w.o.RetryDelay, "shutdown while the dead-letter record could not be stored; the node runs again on the next delivery", log)
			return false
		}
		wait = min(wait*2, max(maxStoreWait, w.o.RetryDelay))
	}
}

// heldRecords counts the tasks of this process that hold an outcome the
// dead-letter stream refused, so that the log says so once, then at most
// every heldLogEvery, not once per task and try.
type heldRecords struct {
	mu         sync.Mutex
	n          int
	since      time.Time // when n last became 1
	stored     int       // records stored after being refused, since n was last 0
	lastLog    time.Time
	lastErr    error
	reportMu   sync.Mutex // serialises reports, so that none overtakes a newer one
	lastReport time.Time
	reported   int // tasks in the last report
}

// heldLogEvery is how often the log repeats that records are held.
const heldLogEvery = 30 * time.Second

// hold counts one more held task, unless MaxHeld are held already.
func (h *heldRecords) hold(w *Worker, err error, log taskLog) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	if h.n >= w.o.MaxHeld {
		if time.Since(h.lastLog) >= heldLogEvery {
			h.lastLog = time.Now()
			log.Error("dead-letter record not stored, and consumer.workers/2 tasks are held already: handing tasks back with a growing delay",
				"dlq_err", err, "held_tasks", h.n)
		}
		return false
	}
	w.o.Metrics.HeldRecords(1)
	h.n++
	h.lastErr = err
	if h.n == 1 {
		h.since = time.Now().UTC()
	}
	if h.n == 1 || time.Since(h.lastLog) >= heldLogEvery {
		h.lastLog = time.Now()
		log.Error("dead-letter record not stored; the task is held with its outcome and only the store is retried (repeated at most every 30s)",
			"dlq_err", err, "held_tasks", h.n)
	}
	return true
}

func (h *heldRecords) failed(w *Worker, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	if time.Since(h.lastLog) >= heldLogEvery {
		h.lastLog = time.Now()
		w.o.Logger.Error("dead-letter records still not stored; their tasks are held", "dlq_err", err, "held_tasks", h.n)
	}
}

// release counts one held task less: its record was stored, or it was
// handed back at shutdown.
func (h *heldRecords) release(w *Worker, stored bool, log taskLog) {
	w.o.Metrics.HeldRecords(-1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n--
	if stored {
		h.stored++
	}
	if h.n == 0 && h.stored > 0 {
		w.o.Logger.Info("dead-letter stream accepts records again; no task is held", "stored", h.stored)
		h.stored = 0
	}
}

// reportHeld writes this process's held report to the ledger when the
// count went from or to zero, changed (at most once a second), or the last
// report is due for a refresh.
func (w *Worker) reportHeld() {
	if w.o.Ledger == nil {
		return
	}
	h := &w.held
	h.reportMu.Lock()
	defer h.reportMu.Unlock()
	h.mu.Lock()
	r := queue.HeldReport{Tasks: h.n, Since: h.since}
	if h.lastErr != nil {
		r.Error = h.lastErr.Error()
	}
	since := time.Since(h.lastReport)
	due := (r.Tasks == 0) != (h.reported == 0) || r.Tasks != h.reported && since >= time.Second || since >= queue.HeldReportEvery/2
	if due {
		h.lastReport, h.reported = time.Now(), r.Tasks
	}
	h.mu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.o.Ledger.ReportHeld(ctx, w.o.ID, r); err != nil {
		w.o.Logger.Debug("held report not written", "err", err)
	}
}

// lookUp reads the ledger for a task delivered before. It returns a
// failure when too many of its solo runs ended without an outcome.
func (w *Worker) lookUp(j *job, log taskLog) *failure {
	if w.o.Ledger == nil || j.deliveries <= 1 || j.seq == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	t, tracked, err := w.o.Ledger.Tally(ctx, j.seq, j.deliveries)
	if err != nil {
		// Without the ledger a poison task cannot be told from a handed-back
		// one: run it rather than dead-letter a sound task.
		log.Warn("delivery ledger not readable; running the task without the poison check", "err", err)
		return nil
	}
	j.tally, j.tracked = t, tracked
	if n := t.SoloCrashes(); n >= w.o.PoisonAfter {
		return &failure{reason: dlq.ReasonPoison, kind: resilience.Other, err: fmt.Errorf(
			"the task ran alone in a consumer process %d times, and each time the process died, hung or lost its connection before the task had an outcome "+
				"(%d of its %d deliveries so far ended that way); dead-lettered before it runs again (consumer.poison_after is %d)",
			n, t.Unsettled(j.deliveries), j.deliveries-1, w.o.PoisonAfter)}
	}
	return nil
}

// note adds d to the task's ledger entry before the task is handed back
// or redelivered. If it cannot, the delivery later counts as one without
// an outcome.
func (w *Worker) note(j *job, d queue.Tally, log taskLog) {
	if w.o.Ledger == nil || j.seq == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.o.Ledger.Add(ctx, j.seq, d); err != nil {
		log.Warn("delivery ledger not updated; this delivery may count toward consumer.poison_after", "err", err)
		return
	}
	j.tracked = true
}

// forget removes the task's ledger entry after its final outcome.
func (w *Worker) forget(j *job, log taskLog) {
	if w.o.Ledger == nil || !j.tracked {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.o.Ledger.Forget(ctx, j.seq); err != nil {
		log.Debug("delivery ledger entry not removed; it expires by itself", "err", err)
	}
}

// soundID returns s if it may be used as an identifier, else "".
func soundID(s string) string {
	if task.CheckID(s) != nil {
		return ""
	}
	return s
}

// result encodes r for the task's reply subject, JSON when the task came
// as JSON. It returns nil when there is nothing to send: no reply subject,
// no Replier, or a reply subject the policy refuses (a task that names one
// is dead-lettered; nothing is ever published to it). It fails when the
// result would not fit in one message.
func (w *Worker) result(env *task.Envelope, r *task.Result, msg jetstream.Msg) (*nats.Msg, error) {
	if env.ReplyTo == "" || w.o.Replier == nil || w.o.Replies.Check(env.ReplyTo) != nil {
		return nil, nil
	}
	asJSON := task.IsJSON(msg.Headers().Get(queue.HeaderContentType))
	data, err := task.EncodeResult(r, asJSON)
	if err != nil {
		return nil, resilience.Wrap(resilience.Serialization, fmt.Errorf("encode the result: %w", err))
	}
	out := nats.NewMsg(env.ReplyTo)
	out.Data = data
	ct := task.ContentTypeMsgpack
	if asJSON {
		ct = task.ContentTypeJSON
	}
	out.Header.Set(queue.HeaderContentType, ct)
	if limit := w.o.Replier.MaxPayload() - 1024; int64(len(data)) > limit { // 1 KiB for subject and headers
		return nil, resilience.Errorf(resilience.Serialization, "the result is %d bytes, more than the %d that fit in one message to reply_to (the server's max_payload)", len(data), limit)
	}
	return out, nil
}

// publishResult sends a result made by result, with the traceparent of
// the task's span when tracing is on; nil sends nothing.
func (w *Worker) publishResult(j *job, out *nats.Msg, log taskLog) {
	if out == nil {
		return
	}
	j.trace.inject(out.Header)
	if err := w.o.Replier.PublishMsg(out); err != nil {
		log.Warn("could not publish the result", "reply_to", out.Subject, "err", err)
	}
}
