package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Each run outcome comes to one verdict: verb, delay, reason, breaker report.
func TestDecide(t *testing.T) {
	transient := resilience.Errorf(resilience.Transport, "downstream unavailable")
	permanent := resilience.Errorf(resilience.Manifest, "bad params")
	policy := resilience.Redelivery{MaxDeliveries: 3, Backoff: []time.Duration{5 * time.Second, 30 * time.Second}}
	cases := []struct {
		name    string
		r       ran
		charged int
		want    Verdict
	}{
		{"success", ran{attempts: 1}, 1, Verdict{Verb: Ack, Attempts: 1, Breaker: resilience.OutcomeSuccess}},
		{"success, result too large", ran{attempts: 2, resultErr: errors.New("too large")}, 1,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonPermanent, Kind: resilience.Serialization, Attempts: 2, Breaker: resilience.OutcomeSuccess}},
		{"permanent", ran{err: permanent, attempts: 1}, 1,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonPermanent, Kind: resilience.Manifest, Attempts: 1, Breaker: resilience.OutcomeIgnored}},
		{"transient, deliveries left", ran{err: transient, attempts: 3}, 1,
			Verdict{Verb: Redeliver, Delay: 5 * time.Second, Kind: resilience.Transport, Attempts: 3, Breaker: resilience.OutcomeFailure}},
		{"transient, second delivery", ran{err: transient, attempts: 3}, 2,
			Verdict{Verb: Redeliver, Delay: 30 * time.Second, Kind: resilience.Transport, Attempts: 3, Breaker: resilience.OutcomeFailure}},
		{"transient, deliveries spent", ran{err: transient, attempts: 3}, 3,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonExhausted, Kind: resilience.Transport, Attempts: 3, Breaker: resilience.OutcomeFailure}},
		{"interrupted by shutdown", ran{err: context.Canceled, attempts: 1, interrupted: true}, 3,
			Verdict{Verb: HandBack, Reason: "interrupted by shutdown", Kind: resilience.KindOf(context.Canceled), Attempts: 1, Breaker: resilience.OutcomeIgnored}},
		{"shutdown during backoff", ran{err: transient, attempts: 1, stopped: true, backoff: time.Second}, 3,
			Verdict{Verb: HandBack, Delay: time.Second, Reason: "shutdown during retry backoff", Kind: resilience.Transport, Attempts: 1, Breaker: resilience.OutcomeIgnored}},
		{"deadline", ran{err: context.DeadlineExceeded, attempts: 1, deadline: true}, 1,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonDeadline, Kind: resilience.KindOf(context.DeadlineExceeded), Attempts: 1, Breaker: resilience.OutcomeIgnored}},
		{"first failed probe: uncharged, reopens", ran{err: transient, attempts: 1, probe: true, firstProbe: true}, 3,
			Verdict{Verb: HandBack, Delay: time.Minute, Reason: "the circuit breaker's probe failed", Kind: resilience.Transport, Attempts: 1, Breaker: resilience.OutcomeFailure}},
		{"second failed probe: charged", ran{err: transient, attempts: 1, probe: true}, 1,
			Verdict{Verb: Redeliver, Delay: 5 * time.Second, Kind: resilience.Transport, Attempts: 1, Breaker: resilience.OutcomeFailure}},
		{"second failed probe, deliveries spent", ran{err: transient, attempts: 1, probe: true}, 3,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonExhausted, Kind: resilience.Transport, Attempts: 1, Breaker: resilience.OutcomeFailure}},
		{"probe with a permanent error: the task's fault", ran{err: permanent, attempts: 1, probe: true, firstProbe: true}, 1,
			Verdict{Verb: DeadLetter, Reason: dlq.ReasonPermanent, Kind: resilience.Manifest, Attempts: 1, Breaker: resilience.OutcomeIgnored}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := decide(c.r, c.charged, policy, time.Minute)
			got.Err, c.want.Err = nil, nil
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// A task handed back five times because the breaker was open, then failed
// transiently, still gets every delivery the policy allows: hand-backs are
// not charged.
func TestHandBacksAreNotCharged(t *testing.T) {
	l := &fakeLedger{tallies: map[uint64]queue.Tally{}}
	b := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(100), Cooldown: time.Hour})
	b.Apply(true, time.Now().Add(time.Hour), 1) // open for an hour
	fail := func() error { return resilience.Errorf(resilience.Transport, "downstream unavailable") }
	w := New(Options{Registry: nodes(fail), Ledger: l, Breaker: b, Retry: resilience.None(),
		Redelivery: resilience.Redelivery{MaxDeliveries: 3, Backoff: []time.Duration{time.Second}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	env := &task.Envelope{ID: "t1", NodeType: "n"}
	var got []string
	deliver := func(n uint64) {
		msg := newFakeMsg(t, env, n)
		w.Handle(context.Background(), queue.Delivery{Msg: msg, Stopping: context.Background()})
		got = append(got, msg.settlement()...)
	}
	for n := uint64(1); n <= 5; n++ {
		deliver(n)
	}
	b.Apply(false, time.Time{}, 0) // the downstream is back, as far as the breaker knows
	for n := uint64(6); n <= 7; n++ {
		deliver(n)
	}
	want := "[nak nak nak nak nak nak 1s nak 1s]"
	if fmt.Sprint(got) != want {
		t.Fatalf("settled %v; want %s", got, want)
	}
	tl := l.tallies[42]
	if tl.HandedBack != 5 || tl.Redelivered != 2 {
		t.Fatalf("ledger %+v; want 5 handed back, 2 redelivered", tl)
	}
	// The 8th delivery is the task's 3rd charged one: its failure is final.
	if c := tl.Charged(8); c != 3 {
		t.Fatalf("delivery 8 is charged as the %dth; want the 3rd", c)
	}
	if v := decide(ran{err: fail(), attempts: 1}, tl.Charged(8), w.o.Redelivery, 0); v.Verb != DeadLetter || v.Reason != dlq.ReasonExhausted {
		t.Fatalf("delivery 8: %+v; want dead-lettered as exhausted", v)
	}
}

// A task's first failed probe is a hand-back; its second is charged, so
// that tasks failing whatever the downstream does are dead-lettered in
// time instead of keeping the breaker open between them.
func TestFailedProbes(t *testing.T) {
	l := &fakeLedger{tallies: map[uint64]queue.Tally{}}
	b := resilience.NewBreaker(resilience.BreakerSettings{Cooldown: time.Millisecond, MaxCooldown: time.Minute})
	fail := func() error { return resilience.Errorf(resilience.Transport, "downstream unavailable") }
	w := New(Options{Registry: nodes(fail), Ledger: l, Breaker: b, Retry: resilience.None(),
		Redelivery: resilience.Redelivery{MaxDeliveries: 3, Backoff: []time.Duration{time.Second}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	env := &task.Envelope{ID: "t1", NodeType: "n"}
	probe := func(n uint64) string {
		b.Apply(true, time.Now().Add(time.Millisecond), 1)
		time.Sleep(2 * time.Millisecond) // half-open: this delivery is the probe
		msg := newFakeMsg(t, env, n)
		w.Handle(context.Background(), queue.Delivery{Msg: msg, Stopping: context.Background()})
		if b.State() != resilience.StateOpen {
			t.Fatalf("delivery %d: the failed probe left the breaker %v", n, b.State())
		}
		return fmt.Sprint(msg.settlement())
	}
	if got := probe(1); got != "[nak 1m0s]" {
		t.Fatalf("first failed probe settled %s; want handed back for the max cooldown", got)
	}
	if tl := l.tallies[42]; tl.HandedBack != 1 || tl.Probed != 1 || tl.Charged(2) != 1 {
		t.Fatalf("ledger after the first failed probe %+v; want it uncharged", tl)
	}
	if got := probe(2); got != "[nak 1s]" {
		t.Fatalf("second failed probe settled %s; want a charged redelivery", got)
	}
	if tl := l.tallies[42]; tl.Redelivered != 1 || tl.Probed != 2 || tl.Charged(3) != 2 {
		t.Fatalf("ledger after the second failed probe %+v; want it charged", tl)
	}
}

// A shutdown during the retry backoff hands the task back with what is left
// of the wait, not the whole of it.
func TestRunNodeStoppedInBackoffKeepsRemainingDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stopping, stop := context.WithCancel(context.Background())
		defer stop()
		policy := resilience.Fixed(time.Second, 3)
		go func() {
			time.Sleep(1300 * time.Millisecond) // 300ms into the second 1s wait
			stop()
		}()
		r := runNode(context.Background(), context.Background(), stopping, policy, func(int) error {
			return resilience.Errorf(resilience.Transport, "down")
		}, func(int, error, time.Duration) {})
		if !r.stopped || r.attempts != 2 {
			t.Fatalf("stopped %v after %d attempts, want stopped after 2", r.stopped, r.attempts)
		}
		if r.backoff != 700*time.Millisecond {
			t.Fatalf("handed back with %v to wait, want the 700ms left of the 1s backoff", r.backoff)
		}
	})
}

// Each verb's outcome is the metric label counting it: logs and metrics
// speak one vocabulary.
func TestVerbOutcomes(t *testing.T) {
	for v, want := range map[Verb]string{Ack: metrics.Succeeded, Redeliver: metrics.Redelivered, HandBack: metrics.HandedBack, DeadLetter: metrics.DeadLettered} {
		if v.String() != want {
			t.Errorf("%d.String() = %q, want %q", v, v.String(), want)
		}
	}
}
