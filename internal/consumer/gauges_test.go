package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// streamGauge reads one stream gauge as a scrape would; -1 when absent.
func streamGauge(t *testing.T, reg *prometheus.Registry, name, stream string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) == 1 && l[0].GetName() == "stream" && l[0].GetValue() == stream {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// streamGaugeValues reads the three gauges: pending, ack pending, redelivered.
func streamGaugeValues(t *testing.T, reg *prometheus.Registry, stream string) [3]float64 {
	t.Helper()
	return [3]float64{streamGauge(t, reg, "nodeq_stream_pending_tasks", stream), streamGauge(t, reg, "nodeq_stream_ack_pending_tasks", stream),
		streamGauge(t, reg, "nodeq_stream_redelivered_tasks", stream)}
}

// Against a real server: tasks stored and not delivered, one delivered a
// second time and held, show in the gauges; stop ends the polling.
func TestStreamGaugesReadTheDurable(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	names, err := queue.DefaultNames().Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	durable, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	publish := func() {
		t.Helper()
		if _, err := js.Publish(ctx, names.TaskPrefix+".echo", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	fetchOne := func() jetstream.Msg {
		t.Helper()
		batch, err := durable.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			return m
		}
		t.Fatal("nothing delivered")
		return nil
	}
	// One task delivered, handed back, delivered again and held; two more
	// stored behind it.
	publish()
	if err := fetchOne().Nak(); err != nil {
		t.Fatal(err)
	}
	held := fetchOne()
	if meta, _ := held.Metadata(); meta == nil || meta.NumDelivered != 2 {
		t.Fatalf("metadata %+v: want the second delivery", meta)
	}
	publish()
	publish()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Declare(metrics.Labels{Stream: names.TaskStream})
	g := &streamGauges{durable: durable, stream: names.TaskStream, m: m, log: slog.New(slog.DiscardHandler), every: 20 * time.Millisecond, timeout: 5 * time.Second}
	stop := g.start()
	defer stop()
	expect := func(want [3]float64) {
		t.Helper()
		waitFor(t, func() bool { return streamGaugeValues(t, reg, names.TaskStream) == want }, func() string {
			return fmt.Sprintf("gauges (pending, ack pending, redelivered) %v; want %v", streamGaugeValues(t, reg, names.TaskStream), want)
		})
	}
	expect([3]float64{2, 1, 1})
	// Settled: the next poll shows it.
	if err := held.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	expect([3]float64{2, 0, 0})
	stop() // returns once the polling goroutine has ended
}

// waitFor polls cond for up to 10s (a real server answers in
// milliseconds; the bound only ends a broken test).
func waitFor(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
	}
}

// fakeInfo answers Info with what the test sets, or blocks until the read
// ends when hang is set.
type fakeInfo struct {
	mu     sync.Mutex
	info   *jetstream.ConsumerInfo
	err    error
	hang   bool
	cached *jetstream.ConsumerInfo
}

func (f *fakeInfo) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	f.mu.Lock()
	info, err, hang := f.info, f.err, f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return info, err
}

func (f *fakeInfo) CachedInfo() *jetstream.ConsumerInfo { return f.cached }

func (f *fakeInfo) set(info *jetstream.ConsumerInfo, err error, hang bool) {
	f.mu.Lock()
	f.info, f.err, f.hang = info, err, hang
	f.mu.Unlock()
}

// syncBuffer is a log destination safe for the polling goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), text)
}

// The cached info shows at once; a read that fails (an error or no answer
// within the timeout) keeps the last values and is logged once, then once
// a minute; a read that succeeds again says so once; a read cut short by
// stop is no failure.
func TestStreamGaugesFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m := metrics.New(reg)
		logs := &syncBuffer{}
		f := &fakeInfo{cached: &jetstream.ConsumerInfo{NumPending: 9}}
		f.set(&jetstream.ConsumerInfo{NumPending: 5, NumAckPending: 2, NumRedelivered: 1}, nil, false)
		g := &streamGauges{durable: f, stream: "TASKS", m: m, log: slog.New(slog.NewTextHandler(logs, nil)), every: 10 * time.Second, timeout: 5 * time.Second}

		// Blocked before the first poll: only the cached info is set.
		f.mu.Lock()
		stop := g.start()
		if got := streamGaugeValues(t, reg, "TASKS"); got != [3]float64{9, 0, 0} {
			t.Fatalf("from the cached info %v; want [9 0 0]", got)
		}
		f.mu.Unlock()
		synctest.Wait()
		if got := streamGaugeValues(t, reg, "TASKS"); got != [3]float64{5, 2, 1} {
			t.Fatalf("after the first poll %v; want [5 2 1]", got)
		}

		f.set(nil, errors.New("nats: timeout"), false)
		time.Sleep(4*time.Minute + 55*time.Second) // 29 failed reads
		synctest.Wait()
		if got := streamGaugeValues(t, reg, "TASKS"); got != [3]float64{5, 2, 1} {
			t.Fatalf("after failed reads %v; want the last values [5 2 1]", got)
		}
		if n := logs.count("stream gauges not updated"); n != 5 {
			t.Fatalf("%d failure lines in 5 minutes of failures; want 5 (once, then once a minute)\n%s", n, logs.String())
		}

		f.set(&jetstream.ConsumerInfo{NumPending: 1}, nil, false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := streamGaugeValues(t, reg, "TASKS"); got != [3]float64{1, 0, 0} {
			t.Fatalf("after recovery %v; want [1 0 0]", got)
		}
		if n := logs.count("stream gauges updated again"); n != 1 {
			t.Fatalf("%d recovery lines; want 1", n)
		}

		// A server that does not answer: the read ends at the timeout.
		f.set(nil, nil, true)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := logs.count("context deadline exceeded"); n != 1 {
			t.Fatalf("%d lines for an unanswered read; want 1\n%s", n, logs.String())
		}
		f.set(&jetstream.ConsumerInfo{NumPending: 1}, nil, false)
		time.Sleep(10 * time.Second)
		synctest.Wait()

		// Stopped during a read: not a failure, and stop waits for its end.
		f.set(nil, nil, true)
		time.Sleep(5 * time.Second) // the next read begins and hangs
		synctest.Wait()
		before := logs.count("stream gauges not updated")
		stop()
		if n := logs.count("stream gauges not updated"); n != before {
			t.Fatalf("a read cut short by stop was logged as a failure\n%s", logs.String())
		}
	})
}

// Without metrics nothing polls.
func TestStreamGaugesOff(t *testing.T) {
	c := &Consumer{}
	c.watchStreamGauges()()
}
