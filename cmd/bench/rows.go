package main

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// consumeRaw measures a minimal jetstream Consume loop over n pre-published
// tasks: async Ack, or synchronous DoubleAck one message at a time.
func (b *bench) consumeRaw(ctx context.Context, n int, double bool) (float64, error) {
	cons, err := b.prepare(ctx, n, nil)
	if err != nil {
		return 0, err
	}
	var count atomic.Int64
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if double {
			_ = m.DoubleAck(ctx)
		} else {
			_ = m.Ack()
		}
		count.Add(1)
	})
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	if err := waitCount(&count, int64(n), 5*time.Minute); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// prepare resets the streams and publishes n tasks: echo tasks, or fault
// tasks with params when params is set.
func (b *bench) prepare(ctx context.Context, n int, params func(int) task.Params) (jetstream.Consumer, error) {
	cons, err := b.reset(ctx)
	if err != nil {
		return nil, err
	}
	nodeType := "echo"
	if params != nil {
		nodeType = "fault"
	}
	msgs, err := b.taskMsgs(n, nodeType, params)
	if err != nil {
		return nil, err
	}
	return cons, b.publishAll(ctx, msgs)
}

// consumeNodeq measures nodeq's consumer over n pre-published tasks.
func (b *bench) consumeNodeq(ctx context.Context, n, workers int, ack string, params func(int) task.Params) (float64, error) {
	cons, err := b.prepare(ctx, n, params)
	if err != nil {
		return 0, err
	}
	var count atomic.Int64
	start := time.Now()
	q, err := b.startNodeq(cons, nodeqOpts{workers: workers, registry: echoRegistry(), ack: ack, retry: resilience.Fixed(time.Millisecond, 3),
		redelivery: resilience.Redelivery{MaxDeliveries: 1}, onHandled: func(jetstream.Msg) { count.Add(1) }})
	if err != nil {
		return 0, err
	}
	defer q.stop()
	if err := waitCount(&count, int64(n), 5*time.Minute); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// latencies is publish-to-ack latencies.
type latencies []time.Duration

func (l latencies) pct(p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	i := min(len(l)-1, int(float64(len(l))*p))
	return float64(l[i]) / float64(time.Millisecond)
}

// latency publishes at a fixed rate for d and measures publish-to-ack for
// nodeq (16 workers) or a raw async-ack Consume loop.
func (b *bench) latency(ctx context.Context, rate float64, d time.Duration, raw bool) (latencies, error) {
	cons, err := b.reset(ctx)
	if err != nil {
		return nil, err
	}
	n := int(rate * d.Seconds())
	msgs, err := b.taskMsgs(n, "echo", nil)
	if err != nil {
		return nil, err
	}
	sent := make([]atomic.Int64, n) // publish time, unix nanos
	var mu sync.Mutex
	var lat latencies
	var count atomic.Int64
	record := func(m jetstream.Msg) {
		id := m.Headers().Get(nats.MsgIdHdr)
		i, _ := strconv.Atoi(id[1:])
		l := time.Duration(time.Now().UnixNano() - sent[i].Load())
		mu.Lock()
		lat = append(lat, l)
		mu.Unlock()
		count.Add(1)
	}
	if raw {
		cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); record(m) })
		if err != nil {
			return nil, err
		}
		defer cc.Stop()
	} else {
		q, err := b.startNodeq(cons, nodeqOpts{workers: 16, registry: echoRegistry(), onHandled: record})
		if err != nil {
			return nil, err
		}
		defer q.stop()
	}
	if _, err := publishPaced(b.js, msgs, rate, sent); err != nil {
		return nil, err
	}
	return lat, waitCount(&count, int64(n), time.Minute)
}

// publishNodeq measures the producer's bulk path (encode + async publish with PubAcks).
func (b *bench) publishNodeq(ctx context.Context, n int) (float64, error) {
	if _, err := b.reset(ctx); err != nil {
		return 0, err
	}
	pub := queue.NewPublisher(b.js, b.names)
	failed := 0
	start := time.Now()
	tasks := func(yield func(*task.Envelope) bool) {
		for i := range n {
			if !yield(&task.Envelope{ID: "t" + strconv.Itoa(i), NodeType: "echo", Payload: payload}) {
				return
			}
		}
	}
	err := pub.PublishAll(ctx, tasks, 256, func(o queue.Outcome) {
		if o.Err != nil {
			failed++
		}
	})
	if err == nil && failed > 0 {
		err = fmt.Errorf("%d publishes failed", failed)
	}
	return float64(n) / time.Since(start).Seconds(), err
}

// publishRaw measures a raw async-publish loop of pre-encoded messages with
// the same window.
func (b *bench) publishRaw(ctx context.Context, n int) (float64, error) {
	if _, err := b.reset(ctx); err != nil {
		return 0, err
	}
	msgs, err := b.taskMsgs(n, "echo", nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	futs := make(chan jetstream.PubAckFuture, 256)
	errs := make(chan error, 1)
	go func() {
		var first error
		for f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if first == nil {
					first = err
				}
			}
		}
		errs <- first
	}()
	for _, m := range msgs {
		f, err := b.js.PublishMsgAsync(m)
		if err != nil {
			close(futs)
			return 0, err
		}
		futs <- f
	}
	close(futs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// writeRecords stores n dead-letter records of echo tasks.
func (b *bench) writeRecords(ctx context.Context, n int) ([]*nats.Msg, error) {
	if _, err := b.reset(ctx); err != nil {
		return nil, err
	}
	msgs, err := b.taskMsgs(n, "echo", nil)
	if err != nil {
		return nil, err
	}
	w := dlq.NewWriter(b.js, b.names.DLQPrefix)
	for i, m := range msgs {
		r := &dlq.Record{Reason: dlq.ReasonExhausted, TaskID: "t" + strconv.Itoa(i), NodeType: "echo", ErrorKind: "Transport", Error: "down",
			Subject: m.Subject, Stream: b.names.TaskStream, Sequence: uint64(i + 1), Headers: m.Header, Data: m.Data}
		if _, err := w.Write(ctx, r); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// replayNodeq measures dlq replay (republish, PubAck, delete) of n records.
func (b *bench) replayNodeq(ctx context.Context, n int) (float64, error) {
	if _, err := b.writeRecords(ctx, n); err != nil {
		return 0, err
	}
	start := time.Now()
	sum, err := dlq.NewStore(b.js, b.names.DLQStream, b.names.DLQPrefix).Replay(ctx, &dlq.Filter{}, dlq.ReplayOptions{})
	if err == nil && sum.Replayed != n {
		err = fmt.Errorf("replayed %d of %d", sum.Replayed, n)
	}
	return float64(n) / time.Since(start).Seconds(), err
}

// replayRaw measures n synchronous raw publishes of the same tasks.
func (b *bench) replayRaw(ctx context.Context, n int) (float64, error) {
	if _, err := b.reset(ctx); err != nil {
		return 0, err
	}
	msgs, err := b.taskMsgs(n, "echo", nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for _, m := range msgs {
		if _, err := b.js.PublishMsg(ctx, m); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// breakerReaction trips the breaker of a consumer with every worker busy
// and its prefetch full, and measures the time from the trip to the last
// prefetched task handed back to the stream, and how many tasks started
// after the trip.
func (b *bench) breakerReaction(ctx context.Context) (time.Duration, int, error) {
	params := func(int) task.Params { return task.Params{"kind": "Transport"} }
	cons, err := b.prepare(ctx, 3000, params)
	if err != nil {
		return 0, 0, err
	}
	var mu sync.Mutex
	var tripped, lastHandBack time.Time
	startedAfter := 0
	br := resilience.NewBreaker(resilience.BreakerSettings{Cooldown: time.Hour, OnStateChange: func(_ string, _, to resilience.State) {
		if to == resilience.StateOpen {
			mu.Lock()
			tripped = time.Now()
			mu.Unlock()
		}
	}})
	reg := echoRegistry()
	wrapped := executor.NewRegistry()
	for _, t := range reg.Types() {
		node, _ := reg.Lookup(t)
		ex := node.Executor
		_ = wrapped.Register(executor.Node{Type: t, Executor: executor.Func(func(c context.Context, e *task.Envelope) ([]byte, error) {
			mu.Lock()
			if !tripped.IsZero() {
				startedAfter++
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // every worker busy when the breaker trips
			return ex.Execute(c, e)
		})})
	}
	q, err := b.startNodeq(cons, nodeqOpts{workers: 16, registry: wrapped, breaker: br, retry: resilience.None(),
		redelivery: resilience.Redelivery{MaxDeliveries: 1000, Backoff: []time.Duration{10 * time.Millisecond}},
		onHandedBack: func(jetstream.Msg) {
			mu.Lock()
			lastHandBack = time.Now()
			mu.Unlock()
		}})
	if err != nil {
		return 0, 0, err
	}
	defer q.stop()
	deadline := time.Now().Add(30 * time.Second)
	for br.State() != resilience.StateOpen {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("breaker did not open")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * time.Second) // anything still coming would arrive by now
	mu.Lock()
	defer mu.Unlock()
	if lastHandBack.IsZero() {
		return 0, 0, fmt.Errorf("no prefetched task was handed back at the trip")
	}
	return max(lastHandBack.Sub(tripped), 0), startedAfter, nil
}

// consumerRSS runs the consumer binary against the bench server with
// pending tasks and busy workers and reads its peak RSS.
func (b *bench) consumerRSS(ctx context.Context, dir string, pending int) (int64, error) {
	bin, err := buildConsumer(ctx, dir)
	if err != nil {
		return 0, err
	}
	if _, err := b.reset(ctx); err != nil {
		return 0, err
	}
	msgs, err := b.taskMsgs(pending, "sleep", func(int) task.Params { return task.Params{"duration": "30s"} })
	if err != nil {
		return 0, err
	}
	if err := b.publishAll(ctx, msgs); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "--nats-url", b.srv.ClientURL(), "--workers", "16", "--log-level", "error")
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() }()
	time.Sleep(4 * time.Second)
	return peakRSS(cmd.Process.Pid)
}
