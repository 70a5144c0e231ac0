package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/metrics"
)

// The stream gauges (nodeq_stream_pending_tasks,
// nodeq_stream_ack_pending_tasks, nodeq_stream_redelivered_tasks) are read
// from the durable consumer's info every streamGaugesEvery, each read
// bounded by streamGaugesTimeout. A read that fails keeps the last values
// and is logged once, then at most every streamGaugesLogEvery while reads
// keep failing.
const (
	streamGaugesEvery    = 10 * time.Second
	streamGaugesTimeout  = 5 * time.Second
	streamGaugesLogEvery = time.Minute
)

// consumerInfo is what the stream gauges read; jetstream.Consumer is one.
type consumerInfo interface {
	Info(ctx context.Context) (*jetstream.ConsumerInfo, error)
	CachedInfo() *jetstream.ConsumerInfo
}

// streamGauges keeps the stream gauges of one task stream up to date.
type streamGauges struct {
	durable consumerInfo
	stream  string
	m       *metrics.Metrics
	log     *slog.Logger
	every   time.Duration
	timeout time.Duration

	// Only the polling goroutine touches these.
	failures int       // reads failed in a row
	logged   time.Time // when a failure was last logged
}

// watchStreamGauges sets the stream gauges from the durable consumer's
// info as set-up read it, then reads it again at once and every
// streamGaugesEvery until the returned stop, which waits for the polling
// to end. Without metrics it does nothing.
func (c *Consumer) watchStreamGauges() (stop func()) {
	if c.o.Metrics == nil {
		return func() {}
	}
	g := &streamGauges{durable: c.durable, stream: c.names.TaskStream, m: c.o.Metrics, log: c.log,
		every: streamGaugesEvery, timeout: streamGaugesTimeout}
	return g.start()
}

// start sets the gauges from the cached info and polls in a goroutine
// until stop.
func (g *streamGauges) start() (stop func()) {
	if info := g.durable.CachedInfo(); info != nil {
		g.set(info)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (g *streamGauges) run(ctx context.Context) {
	tick := time.NewTicker(g.every)
	defer tick.Stop()
	for {
		g.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// poll reads the consumer's info once and sets the gauges; on failure the
// gauges keep their last values.
func (g *streamGauges) poll(ctx context.Context) {
	readCtx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	info, err := g.durable.Info(readCtx)
	if ctx.Err() != nil {
		return // stopping: not a failure
	}
	if err != nil {
		g.failures++
		if g.failures == 1 || time.Since(g.logged) >= streamGaugesLogEvery {
			g.logged = time.Now()
			g.log.Warn("stream gauges not updated: the durable consumer's info could not be read; they keep their last values (logged at most every minute)",
				"stream", g.stream, "failures", g.failures, "err", err)
		}
		return
	}
	if g.failures > 0 {
		g.log.Info("stream gauges updated again", "stream", g.stream, "failures", g.failures)
		g.failures = 0
	}
	g.set(info)
}

func (g *streamGauges) set(info *jetstream.ConsumerInfo) {
	g.m.StreamTasks(g.stream, metrics.StreamTasks{Pending: info.NumPending, AckPending: uint64(max(info.NumAckPending, 0)),
		Redelivered: uint64(max(info.NumRedelivered, 0))})
}
