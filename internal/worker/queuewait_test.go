package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// storedMsg is a fakeMsg whose metadata carries the time JetStream stored it.
type storedMsg struct {
	*fakeMsg
	stored time.Time
}

func (m *storedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	meta, err := m.fakeMsg.Metadata()
	meta.Timestamp = m.stored
	return meta, err
}

// queueWait reads the queue-wait histogram of node type "n": how many
// deliveries it observed and their total wait in seconds.
func queueWait(t *testing.T, reg *prometheus.Registry) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nodeq_task_queue_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) == 1 && l[0].GetValue() == "n" {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// The queue wait of a delivery runs from the store time in its metadata to
// the start of its node, once per delivery whatever its attempts; a
// redelivery still counts from the first store; a store time ahead of this
// host's clock counts as 0.
func TestQueueWaitFromMetadata(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		calls := 0
		w := New(Options{Registry: nodes(func() error {
			calls++
			if calls == 1 {
				return resilience.Errorf(resilience.Transport, "once")
			}
			return nil
		}), Retry: resilience.Fixed(time.Second, 2), Metrics: metrics.New(reg), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		handle := func(stored time.Time, deliveries uint64, nodeType string) {
			t.Helper()
			msg := newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: nodeType}, deliveries)
			w.Handle(context.Background(), queue.Delivery{Msg: &storedMsg{fakeMsg: msg, stored: stored}})
			if got := msg.settlement(); len(got) != 1 || got[0] != "ack" {
				t.Fatalf("settled %v; want [ack]", got)
			}
		}
		now := time.Now()
		handle(now.Add(-90*time.Second), 1, "n")        // two attempts, one delivery
		handle(now.Add(-time.Hour+time.Second), 3, "n") // a redelivery, stored an hour ago (less the retry's second)
		handle(now.Add(time.Minute), 1, "n")            // the server's clock is ahead
		if n, sum := queueWait(t, reg); n != 3 || sum != 90+3600 {
			t.Fatalf("%d observations summing to %vs; want 3 summing to %vs", n, sum, 90+3600)
		}
	})
}
