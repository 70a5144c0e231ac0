package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/resilience"
)

// Verb is how a delivery ends: one of a few, each settled one way.
type Verb int

const (
	// Ack: the node succeeded. Its result is published, then the task is
	// acked.
	Ack Verb = iota
	// Redeliver: transient failures used up the delivery's attempts.
	// JetStream delivers the task again after Delay; the delivery counts
	// toward the redelivery policy's MaxDeliveries.
	Redeliver
	// HandBack: the task goes back to the stream, after Delay, through no
	// fault of its own (an open breaker, a shutdown, a failed probe): the
	// delivery is not charged toward MaxDeliveries.
	HandBack
	// DeadLetter: a record is stored in the dead-letter stream, then the
	// task is terminated.
	DeadLetter
)

// String is the verb's outcome, in the one vocabulary logs and metrics
// share: the "outcome" label of nodeq_tasks_total and the "outcome"
// attribute of the log line that ends a delivery ("succeeded",
// "redelivered", "handed_back", "dead_lettered"). A dead letter's reason
// is one of dlq.Reason*, in records, logs ("reason") and replies alike.
func (v Verb) String() string {
	switch v {
	case Ack:
		return metrics.Succeeded
	case Redeliver:
		return metrics.Redelivered
	case HandBack:
		return metrics.HandedBack
	case DeadLetter:
		return metrics.DeadLettered
	}
	return "unknown"
}

// Verdict is what a delivery comes to: the verb and what settling it needs.
type Verdict struct {
	Verb Verb
	// Delay is the wait before a redelivery (Redeliver, HandBack).
	Delay time.Duration
	// Reason is the dead-letter reason (one of dlq.Reason*), or, for a
	// hand-back, why in words.
	Reason string
	// Kind and Err describe the failure, if any.
	Kind resilience.Kind
	Err  error
	// Attempts is how many times the node ran in this delivery.
	Attempts int
	// Breaker is what the circuit breaker is told.
	Breaker resilience.Outcome
}

// ran is what running a task's node came to in one delivery.
type ran struct {
	// err is the last attempt's error; nil when the node succeeded.
	err      error
	attempts int
	// interrupted: a shutdown ran out of time and cancelled the run.
	interrupted bool
	// stopped: shutdown began during the retry backoff; the task had
	// backoff (what was left of the wait) to go before its next attempt.
	stopped bool
	backoff time.Duration
	// deadline: the task's own deadline passed during the run.
	deadline bool
	// probe: the run was the circuit breaker's half-open probe.
	// firstProbe: the task never failed as a probe before: a transient
	// failure then does not charge it (a later one does).
	probe, firstProbe bool
	// resultErr: the node succeeded but its result cannot be sent.
	resultErr error
}

// decide turns a run into a verdict. charged is how many of the task's
// deliveries, this one included, count toward the redelivery policy (those
// handed back do not); probeDelay is how long a task whose probe failed
// stays out of the stream, so that the next probe is another task. It has
// no effects.
func decide(r ran, charged int, redelivery resilience.Redelivery, probeDelay time.Duration) Verdict {
	v := Verdict{Attempts: r.attempts, Err: r.err, Breaker: resilience.OutcomeIgnored}
	if r.err == nil {
		v.Breaker = resilience.OutcomeSuccess
		if r.resultErr != nil {
			// The node ran, but its waiter cannot be told: keep the task
			// with the reason rather than ack a result nobody gets.
			v.Verb, v.Reason, v.Kind, v.Err = DeadLetter, dlq.ReasonPermanent, resilience.Serialization, r.resultErr
			return v
		}
		v.Verb = Ack
		return v
	}
	v.Kind = resilience.KindOf(r.err)
	switch {
	case r.interrupted:
		v.Verb, v.Reason = HandBack, "interrupted by shutdown"
	case r.deadline:
		v.Verb, v.Reason = DeadLetter, dlq.ReasonDeadline
	case !resilience.Retryable(r.err):
		v.Verb, v.Reason = DeadLetter, dlq.ReasonPermanent // the task's fault, not the downstream's
	case r.stopped:
		v.Verb, v.Reason, v.Delay = HandBack, "shutdown during retry backoff", r.backoff
	case r.probe && r.firstProbe:
		// The downstream is still down: the breaker opens again, and the
		// task goes back to the stream uncharged. It waits out the longest
		// cooldown, so that the next probe is another task. Only its first
		// failed probe is free: tasks that fail whatever the downstream does
		// are charged from their second, and dead-lettered in time, rather
		// than keep the breaker open between them.
		v.Verb, v.Reason, v.Delay, v.Breaker = HandBack, "the circuit breaker's probe failed", probeDelay, resilience.OutcomeFailure
	default:
		v.Breaker = resilience.OutcomeFailure
		if delay, again := redelivery.Next(charged); again {
			v.Verb, v.Delay = Redeliver, delay
		} else {
			v.Verb, v.Reason = DeadLetter, dlq.ReasonExhausted
		}
	}
	return v
}

// refused is the verdict for a task that did not run: dead-lettered with
// reason and kind, before its node ran.
func refused(reason string, kind resilience.Kind, err error) Verdict {
	return Verdict{Verb: DeadLetter, Reason: reason, Kind: kind, Err: err, Breaker: resilience.OutcomeIgnored}
}

// handedBack is the verdict for a task given back before it ran.
func handedBack(why string) Verdict {
	return Verdict{Verb: HandBack, Reason: why, Breaker: resilience.OutcomeIgnored}
}

// runNode runs the node with its retry policy. interrupted is cancelled
// when a shutdown runs out of time; runCtx is the run's context (it also
// ends at the task's deadline); stopping ends when shutdown begins.
func runNode(interrupted, runCtx, stopping context.Context, policy resilience.Policy, attempt func(n int) error, onRetry func(n int, err error, delay time.Duration)) ran {
	var r ran
	for r.attempts = 1; ; r.attempts++ {
		r.err = attempt(r.attempts)
		if r.err == nil {
			return r
		}
		if interrupted.Err() != nil {
			r.interrupted = true
			return r
		}
		if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
			r.deadline = true
			return r
		}
		if !resilience.Retryable(r.err) {
			return r
		}
		delay, again := policy.NextRetry(r.attempts)
		if !again {
			return r
		}
		onRetry(r.attempts, r.err, delay)
		waitFrom := time.Now()
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-stopping.Done():
			timer.Stop()
			// Handed back with what is left of the wait: the task has
			// already waited the rest.
			r.stopped, r.backoff = true, max(delay-time.Since(waitFrom), 0)
			return r
		}
	}
}
