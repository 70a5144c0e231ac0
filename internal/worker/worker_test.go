package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// fakeMsg is a delivered task message that records how it was settled.
type fakeMsg struct {
	subject    string
	data       []byte
	header     nats.Header
	seq        uint64
	deliveries uint64

	mu      sync.Mutex
	settled []string // "ack", "nak", "nak 5s", "term reason"
}

func newFakeMsg(t *testing.T, env *task.Envelope, deliveries uint64) *fakeMsg {
	t.Helper()
	data, err := task.EncodeMsgpack(env)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeMsg{subject: "tasks." + env.NodeType, data: data, header: nats.Header{}, seq: 42, deliveries: deliveries}
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Stream: "NODEQ_TASKS", Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: m.deliveries}, nil
}
func (m *fakeMsg) Data() []byte                       { return m.data }
func (m *fakeMsg) Headers() nats.Header               { return m.header }
func (m *fakeMsg) Subject() string                    { return m.subject }
func (m *fakeMsg) Reply() string                      { return "$JS.ACK.x" }
func (m *fakeMsg) Ack() error                         { return m.settle("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error    { return m.settle("ack") }
func (m *fakeMsg) Nak() error                         { return m.settle("nak") }
func (m *fakeMsg) NakWithDelay(d time.Duration) error { return m.settle("nak " + d.String()) }
func (m *fakeMsg) InProgress() error                  { return nil }
func (m *fakeMsg) Term() error                        { return m.settle("term") }
func (m *fakeMsg) TermWithReason(r string) error      { return m.settle("term " + r) }

func (m *fakeMsg) settle(how string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settled = append(m.settled, how)
	return nil
}

func (m *fakeMsg) settlement() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.settled...)
}

// fakeLedger is an in-memory delivery ledger.
type fakeLedger struct {
	mu      sync.Mutex
	tallies map[uint64]queue.Tally
	reads   int
	forgot  []uint64
	readErr error
}

func (l *fakeLedger) Tally(_ context.Context, seq uint64, _ int) (queue.Tally, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	if l.readErr != nil {
		return queue.Tally{}, false, l.readErr
	}
	t, ok := l.tallies[seq]
	return t, ok, nil
}

func (l *fakeLedger) Add(_ context.Context, seq uint64, d queue.Tally) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.tallies[seq]
	t.HandedBack += d.HandedBack
	t.Redelivered += d.Redelivered
	t.Solo += d.Solo
	t.SoloDone += d.SoloDone
	t.Probed += d.Probed
	l.tallies[seq] = t
	return nil
}

func (l *fakeLedger) Forget(_ context.Context, seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.tallies, seq)
	l.forgot = append(l.forgot, seq)
	return nil
}

func (l *fakeLedger) ReportHeld(context.Context, string, queue.HeldReport) error { return nil }

// nodes returns a registry with node type "n" running run.
func nodes(run func() error) *executor.Registry {
	r := executor.NewRegistry()
	_ = r.Register(executor.Node{Type: "n", Executor: executor.Func(func(context.Context, *task.Envelope) ([]byte, error) { return nil, run() })})
	return r
}

// Each case is one delivery and how the ledger and the message end up.
func TestLedgerOutcomes(t *testing.T) {
	transient := func() error { return resilience.Errorf(resilience.Transport, "downstream unavailable") }
	patient := resilience.Redelivery{MaxDeliveries: 10, Backoff: []time.Duration{time.Second}}
	ok := func() error { return nil }
	cases := []struct {
		name       string
		run        func() error
		deliveries uint64
		before     *queue.Tally // the ledger's entry before the delivery, if any
		readErr    error
		stopping   bool // shutdown has begun
		retry      resilience.Policy
		redelivery resilience.Redelivery
		settled    string
		after      *queue.Tally // nil: no entry
		reads      int
	}{
		{name: "first delivery reads nothing", run: ok, deliveries: 1, settled: "ack", reads: 0},
		{name: "redelivery without an entry", run: ok, deliveries: 2, settled: "ack", reads: 1},
		{name: "success forgets the entry", run: ok, deliveries: 3, before: &queue.Tally{HandedBack: 2}, settled: "ack", reads: 1},
		{name: "hand-backs are not charged", run: transient, deliveries: 6, before: &queue.Tally{HandedBack: 5},
			settled: "nak 5s", after: &queue.Tally{HandedBack: 5, Redelivered: 1}, reads: 1},
		{name: "redeliveries are charged", run: transient, deliveries: 2, before: &queue.Tally{Redelivered: 1},
			settled: "nak 30s", after: &queue.Tally{Redelivered: 2}, reads: 1},
		{name: "shutdown during backoff is a hand-back", run: transient, deliveries: 1, stopping: true,
			retry: resilience.Fixed(time.Hour, 3), settled: "nak 1h0m0s", after: &queue.Tally{HandedBack: 1}},
		{name: "ledger unreadable: the task runs", run: ok, deliveries: 9, readErr: errors.New("no ledger"), settled: "ack", reads: 1},
		{name: "after a delivery without outcome: runs alone, then forgets", run: ok, deliveries: 3, before: &queue.Tally{HandedBack: 1}, settled: "ack", reads: 1},
		{name: "one delivery without outcome: runs with the others", run: transient, deliveries: 2,
			settled: "nak 30s", after: &queue.Tally{Redelivered: 1}, reads: 1},
		{name: "a solo run that fails is counted as done", run: transient, deliveries: 3, redelivery: patient,
			settled: "nak 1s", after: &queue.Tally{Redelivered: 1, Solo: 1, SoloDone: 1}, reads: 1},
		{name: "one solo crash, under the limit: runs alone again", run: transient, deliveries: 4, before: &queue.Tally{Solo: 1}, redelivery: patient,
			settled: "nak 1s", after: &queue.Tally{Redelivered: 1, Solo: 2, SoloDone: 1}, reads: 1},
	}
	for _, c := range cases {
		// In a bubble: a delay handed back is exact (no time passes).
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &fakeLedger{tallies: map[uint64]queue.Tally{}, readErr: c.readErr}
				if c.before != nil {
					l.tallies[42] = *c.before
				}
				retry := c.retry
				if retry == nil {
					retry = resilience.None()
				}
				w := New(Options{Registry: nodes(c.run), Ledger: l, Retry: retry, Redelivery: c.redelivery, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				msg := newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, c.deliveries)
				stopping, stop := context.WithCancel(context.Background())
				if c.stopping {
					stop()
				}
				defer stop()
				w.Handle(context.Background(), queue.Delivery{Msg: msg, Stopping: stopping})
				if got := msg.settlement(); len(got) != 1 || got[0] != c.settled {
					t.Fatalf("settled %v; want [%s]", got, c.settled)
				}
				got, has := l.tallies[42]
				switch {
				case c.after == nil && has:
					t.Fatalf("ledger entry %+v left; want none", got)
				case c.after != nil && (!has || got != *c.after):
					t.Fatalf("ledger entry %+v (present %v); want %+v", got, has, *c.after)
				}
				if l.reads != c.reads {
					t.Fatalf("%d ledger reads; want %d", l.reads, c.reads)
				}
			})
		})
	}
}

// A task that runs alone waits for the shared ones to end, and shared
// tasks that come after it wait for it; a wait ends with its context.
func TestIsolation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g isolation
		ctx := context.Background()
		leaveA, _ := g.enter(ctx, false)
		leaveB, _ := g.enter(ctx, false)
		var order []string
		var mu sync.Mutex
		note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
		go func() {
			leave, err := g.enter(ctx, true)
			if err != nil {
				t.Error(err)
				return
			}
			note("alone")
			time.Sleep(time.Second)
			note("alone done")
			leave()
		}()
		synctest.Wait()
		go func() { // comes after the one waiting to run alone
			leave, _ := g.enter(ctx, false)
			note("shared after")
			leave()
		}()
		synctest.Wait()
		if len(order) != 0 {
			t.Fatalf("ran while two shared tasks run: %v", order)
		}
		leaveA()
		leaveA() // idempotent
		synctest.Wait()
		if len(order) != 0 {
			t.Fatalf("ran while a shared task runs: %v", order)
		}
		leaveB()
		synctest.Wait()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if want := []string{"alone", "alone done", "shared after"}; fmt.Sprint(order) != fmt.Sprint(want) {
			t.Fatalf("order %v; want %v", order, want)
		}
		leave, _ := g.enter(ctx, false)
		stop, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { _, err := g.enter(stop, true); errc <- err }()
		synctest.Wait()
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("a wait to run alone did not end with its context")
		}
		leave()
		if l, err := g.enter(ctx, true); err != nil {
			t.Fatalf("after a cancelled wait: %v", err)
		} else {
			l()
		}
	})
}

// lossyAckMsg is a fakeMsg whose first confirmed acks fail, as when the
// connection or the consumer's leader is lost while the ack is on its way.
type lossyAckMsg struct {
	*fakeMsg
	fail       []error
	sends      int
	inProgress int
}

func (m *lossyAckMsg) DoubleAck(ctx context.Context) error {
	m.mu.Lock()
	m.sends++
	var err error
	if len(m.fail) > 0 {
		err, m.fail = m.fail[0], m.fail[1:]
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.settle("ack")
}

func (m *lossyAckMsg) InProgress() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inProgress++
	return nil
}

// An ack the server did not confirm is sent again, to the same subject,
// until it is confirmed, while progress keeps the delivery held: the task
// is settled without running again. Within AckWait only: after it the
// server has redelivered the task anyway.
func TestAckResentUntilConfirmed(t *testing.T) {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := func() error { return nil }
	t.Run("confirmed after reconnect", func(t *testing.T) {
		l := &fakeLedger{tallies: map[uint64]queue.Tally{42: {HandedBack: 1}}}
		w := New(Options{Registry: nodes(ok), Ledger: l, Retry: resilience.None(), AckWait: 900 * time.Millisecond, Logger: discard})
		msg := &lossyAckMsg{fakeMsg: newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 2),
			fail: []error{context.DeadlineExceeded, nats.ErrNoResponders, nats.ErrNoResponders}}
		w.Handle(context.Background(), queue.Delivery{Msg: msg})
		if got := msg.settlement(); len(got) != 1 || got[0] != "ack" || msg.sends != 4 {
			t.Fatalf("settled %v after %d sends; want [ack] after 4", got, msg.sends)
		}
		if _, has := l.tallies[42]; has {
			t.Fatal("a confirmed ack left the ledger entry")
		}
		if msg.inProgress == 0 {
			t.Fatal("no progress sent while the ack was sent again")
		}
	})
	t.Run("given up after AckWait", func(t *testing.T) {
		l := &fakeLedger{tallies: map[uint64]queue.Tally{42: {HandedBack: 1}}}
		w := New(Options{Registry: nodes(ok), Ledger: l, Retry: resilience.None(), AckWait: 300 * time.Millisecond, Logger: discard})
		fail := make([]error, 100)
		for i := range fail {
			fail[i] = nats.ErrNoResponders
		}
		msg := &lossyAckMsg{fakeMsg: newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 2), fail: fail}
		start := time.Now()
		w.Handle(context.Background(), queue.Delivery{Msg: msg})
		if took := time.Since(start); took > 5*time.Second || len(msg.settlement()) != 0 || msg.sends < 2 {
			t.Fatalf("settled %v after %d sends in %v; want nothing, at least 2 sends, within AckWait", msg.settlement(), msg.sends, took)
		}
		if _, has := l.tallies[42]; !has {
			t.Fatal("an unconfirmed ack forgot the ledger entry")
		}
	})
	t.Run("connection closed", func(t *testing.T) {
		w := New(Options{Registry: nodes(ok), Retry: resilience.None(), AckWait: time.Hour, Logger: discard})
		msg := &lossyAckMsg{fakeMsg: newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 1), fail: []error{nats.ErrConnectionClosed}}
		w.Handle(context.Background(), queue.Delivery{Msg: msg})
		if msg.sends != 1 {
			t.Fatalf("%d sends on a closed connection; want 1", msg.sends)
		}
	})
}
