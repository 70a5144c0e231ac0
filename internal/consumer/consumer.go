// Package consumer is the composition root of a nodeq consumer process: a
// Consumer is built once from the configuration and assembles the puller,
// the worker, the dead-letter writer, the ack confirmer, the circuit
// breaker (and its fleet state), the delivery ledger and the metrics.
// cmd/consumer, the integration tests and cmd/bench all run it, so the
// tests run the production wiring.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/tracing"
	"github.com/nodeq/nodeq/internal/version"
	"github.com/nodeq/nodeq/internal/worker"
)

// ErrInterrupted is returned by Run when the shutdown timeout cut in-flight
// tasks short; they were handed back and run again on another delivery.
var ErrInterrupted = errors.New("shutdown interrupted in-flight tasks; they were handed back for redelivery")

// Options configure New. Config and Conn are required; the rest have
// defaults fit for production.
type Options struct {
	// Config is the validated configuration.
	Config *config.Config
	// Conn is the connection to NATS, made with queue.ConsumerInbox() so
	// that deliveries come on the consumers' inbox prefix.
	Conn *nats.Conn
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics, if set, are recorded.
	Metrics *metrics.Metrics
	// Registry defaults to Config.Registry().
	Registry *executor.Registry
	// ID identifies the process in results, records and the fleet.
	// Default worker.DefaultID().
	ID string

	// Durable, if set, is the durable consumer, set up by the caller with
	// its streams: New then sets nothing up on the server but the ledger.
	Durable jetstream.Consumer
	// Breaker, if set, replaces the breaker the configuration describes.
	// With breaker.scope fleet it is the local breaker under the fleet's.
	Breaker *resilience.Breaker
	// Retry and Redelivery, if set, replace the configured policies.
	Retry      resilience.Policy
	Redelivery *resilience.Redelivery
	// RetryDelay is how long a task whose dead-letter record could not be
	// stored waits before it is delivered again. Default 5s.
	RetryDelay time.Duration
	// NoLedger runs without the delivery ledger (no poison detection, and
	// hand-backs are charged like redeliveries).
	NoLedger bool
	// OnInflightBytes, if set, is told the in-flight bytes after each
	// change, besides the metric.
	OnInflightBytes func(int64)
	// MsgBytes, if set, replaces the size the byte budget reserves for one
	// message (queue.PullMsgBytes of the largest task the stream accepts).
	MsgBytes int64
	// OnHandled, if set, is called after each delivery is settled.
	OnHandled func(jetstream.Msg)
	// OnHandedBack, if set, is called after each task the puller hands
	// back unrun (prefetched when the breaker opened or shutdown began, or
	// come too late for its pull request).
	OnHandedBack func(jetstream.Msg)
	// TracerProvider, if set, records the consumer's spans instead of the
	// exporter the configuration's tracing section describes; its owner
	// shuts it down (tests pass one with an in-memory exporter).
	TracerProvider trace.TracerProvider
}

// Consumer is one consumer process's wiring. Build it with New, then Run it once.
type Consumer struct {
	o Options
	// ownRegistry is the registry New built (Options.Registry unset);
	// Run closes it.
	ownRegistry *executor.Registry
	cfg         *config.Config
	log         *slog.Logger
	js          jetstream.JetStream
	names       queue.Names
	durable     jetstream.Consumer
	breaker     *resilience.Breaker // this process's breaker: its state and listeners
	fleet       *fleet.Breaker      // with breaker.scope fleet, the fleet's layer over breaker
	acks        *queue.AckConfirmer
	worker      *worker.Worker
	puller      *queue.Puller
	types       []string
	traces      *tracing.Provider // the configured exporter, shut down by Run; nil when off (tracing.go)
}

// New sets up the streams, the durable consumer and the ledger (within
// ctx, which should carry consumer.startup_timeout), then assembles the
// consumer. It starts nothing that pulls: Run does.
func New(ctx context.Context, o Options) (*Consumer, error) {
	if o.Config == nil || o.Conn == nil {
		return nil, errors.New("consumer: Config and Conn are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ID == "" {
		o.ID = worker.DefaultID()
	}
	cfg, log, m := o.Config, o.Logger, o.Metrics
	c := &Consumer{o: o, cfg: cfg, log: log, names: cfg.QueueNames()}
	registry := o.Registry
	if registry == nil { // built here: Run closes it (its executors may hold modules or processes)
		var err error
		if registry, err = cfg.Registry(); err != nil {
			return nil, err
		}
		c.ownRegistry = registry
	}
	c.types = registry.Types()
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.js = js
	maxTask, err := taskSizeLimit(cfg, o.Conn.MaxPayload())
	if err != nil {
		return nil, err
	}
	maxBody := int64(cfg.Consumer.MaxPayload)
	if maxBody == 0 || maxBody > maxTask {
		maxBody = maxTask
	}
	replies, err := queue.NewReplySubjects(c.names, cfg.Consumer.ReplySubjects)
	if err != nil {
		return nil, err
	}
	if c.durable = o.Durable; c.durable == nil {
		if c.durable, err = c.setUp(ctx, maxTask); err != nil {
			return nil, err
		}
	}
	m.DLQDepth(c.dlqDepth)
	m.Declare(metrics.Labels{NodeTypes: c.types, Stream: c.names.TaskStream, Version: version.String()})

	if err := c.buildBreaker(ctx); err != nil {
		return nil, c.setupErr(ctx, err)
	}
	var ledger worker.Ledger
	if !o.NoLedger {
		l, err := queue.OpenDeliveryLedger(ctx, js, c.names, log)
		if err != nil {
			return nil, c.setupErr(ctx, err)
		}
		ledger = l
	}
	ackWait := ackWait(cfg.Consumer.AckWait, c.durable)
	if cfg.Consumer.Ack == config.AckConfirmed {
		if c.acks, err = queue.NewAckConfirmer(o.Conn, queue.AckOptions{GiveUpAfter: ackWait, OnResend: m.AckResent}); err != nil {
			return nil, fmt.Errorf("ack confirmations: %w", err)
		}
	}
	retry, redelivery := cfg.RetryPolicy(), cfg.RedeliveryPolicy()
	if o.Retry != nil {
		retry = o.Retry
	}
	if o.Redelivery != nil {
		redelivery = *o.Redelivery
	}
	// Workers and the puller ask the fleet's layer when there is one.
	var workerBreaker worker.Breaker
	var gate queue.Gate
	switch {
	case c.fleet != nil:
		workerBreaker, gate = c.fleet, c.fleet
	case c.breaker != nil:
		workerBreaker, gate = c.breaker, c.breaker
	}
	tracer, err := c.startTracing() // last: nothing after it fails (tracing.go)
	if err != nil {
		return nil, err
	}
	c.worker = worker.New(worker.Options{
		Names: c.names, Registry: registry, DLQ: dlq.NewWriter(js, c.names.DLQPrefix), Replier: o.Conn, Replies: replies,
		MaskHeaders: cfg.DLQ.MaskHeaders, MaxPayload: int(maxBody), AckWait: ackWait, KeptAlive: true, Acks: c.acks, AckAsync: cfg.Consumer.Ack == config.AckAsync,
		RetryDelay: o.RetryDelay, Retry: retry, Redelivery: redelivery, Breaker: workerBreaker, Metrics: m, ID: o.ID, Logger: log,
		Ledger: ledger, PoisonAfter: cfg.Consumer.PoisonAfter, LogSuccess: cfg.Log.TaskSuccess, MaxHeld: max(cfg.Consumer.Workers/2, 1), Tracer: tracer,
	})
	handle := c.worker.Handle
	if o.OnHandled != nil {
		handle = func(ctx context.Context, d queue.Delivery) {
			c.worker.Handle(ctx, d)
			o.OnHandled(d.Msg)
		}
	}
	handBack := c.worker.HandBack
	if f := o.OnHandedBack; f != nil {
		handBack = func(msg jetstream.Msg) { c.worker.HandBack(msg); f(msg) }
	}
	onInflight := m.InFlightBytes
	if f := o.OnInflightBytes; f != nil {
		onInflight = func(n int64) { m.InFlightBytes(n); f(n) }
	}
	var maxInflight, maxMsgBytes int64
	if cfg.Consumer.MaxInflightBytes > 0 {
		maxInflight, maxMsgBytes = int64(cfg.Consumer.MaxInflightBytes), queue.PullMsgBytes(maxTask)
		if o.MsgBytes > 0 {
			maxMsgBytes = o.MsgBytes
		}
	}
	c.puller = queue.NewPuller(o.Conn, c.durable, handle, queue.PullOptions{
		Workers: cfg.Consumer.Workers, Prefetch: cfg.Consumer.Prefetch, PullWait: cfg.Consumer.PullWait,
		ShutdownTimeout: cfg.Consumer.ShutdownTimeout, Gate: gate, Logger: log, HandBack: handBack,
		KeepAliveEvery: worker.KeepAliveInterval(ackWait), OnWaiting: m.Prefetched,
		OnPull: m.Pull, OnPullFailure: m.PullFailure,
		MaxInflightBytes: maxInflight, MaxMsgBytes: maxMsgBytes, OnInflightBytes: onInflight,
	})
	return c, nil
}

// setUp creates or updates the streams and the durable consumer, and
// checks the task stream's message size limit.
func (c *Consumer) setUp(ctx context.Context, maxTask int64) (jetstream.Consumer, error) {
	cfg, log := c.cfg, c.log
	setupErr := func(err error) error { return c.setupErr(ctx, err) }
	if err := queue.EnsureStreams(ctx, c.js, c.names, queue.StreamOptions{Replicas: cfg.Streams.Replicas, DLQMaxAge: cfg.Streams.DLQMaxAge,
		DLQMaxBytes: int64(cfg.Streams.DLQMaxBytes), MaxMsgSize: int32(maxTask), Logger: log}); err != nil {
		return nil, setupErr(err)
	}
	if err := checkTaskStream(ctx, c.js, c.names, maxTask, log); err != nil {
		return nil, setupErr(err)
	}
	cons, err := queue.EnsureConsumer(ctx, c.js, c.names, queue.ConsumerOptions{AckWait: cfg.Consumer.AckWait, MaxAckPending: cfg.Consumer.MaxAckPending, Logger: log})
	if err != nil {
		return nil, setupErr(err)
	}
	return cons, nil
}

// setupErr says, for an error of the set-up, that consumer.startup_timeout
// ran out, when it did.
func (c *Consumer) setupErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("JetStream set-up did not finish within consumer.startup_timeout (%v): %w", c.cfg.Consumer.StartupTimeout, err)
	}
	return err
}

// buildBreaker makes the configured breaker (or takes Options.Breaker),
// wires its log lines, gauges and the hand-back of prefetched tasks, which
// exist from start-up, and with breaker.scope fleet layers the fleet's
// state over it. The layer is built last, so that a trip is logged and the
// prefetched tasks go back before the fleet is told.
func (c *Consumer) buildBreaker(ctx context.Context) error {
	cfg, m := c.cfg, c.o.Metrics
	if c.o.Breaker != nil {
		c.breaker = c.o.Breaker
	} else if bs, on := cfg.BreakerSettings(); on {
		bs.Name = c.names.Consumer
		c.breaker = resilience.NewBreaker(bs)
	}
	if c.breaker == nil {
		return nil
	}
	name := c.breaker.Name()
	if name == "" {
		name = c.names.Consumer
	}
	m.BreakerStarted(name)
	c.breaker.Listen(breakerLogger(c.log, cfg, m, name))
	// No task starts while the breaker is open; those prefetched go back
	// to the stream at once, for healthy processes. (Nothing opens the
	// breaker before Run, and the puller exists by then.)
	c.breaker.Listen(func(_ string, _, to resilience.State) {
		if to != resilience.StateOpen || c.puller == nil {
			return
		}
		if n := c.puller.HandBackWaiting(); n > 0 {
			c.log.Info("circuit breaker opened: prefetched tasks handed back", "tasks", n)
		}
	})
	if cfg.Breaker.Scope == "fleet" {
		// The process ID (host/pid) plus a random suffix: containers with
		// their own PID namespace on one host are all host/1, and members
		// of a fleet must not take each other's entries for their own.
		fb, err := fleet.NewBreaker(ctx, c.js, c.names, c.o.ID+"/"+nuid.Next()[:8], c.breaker, fleet.WithLogger(c.log))
		if err != nil {
			return fmt.Errorf("fleet breaker: %w", err)
		}
		c.fleet = fb
	}
	return nil
}

// Run pulls and runs tasks until ctx is done, then shuts down: pulling
// stops, prefetched tasks go back to the stream, in-flight tasks get
// consumer.shutdown_timeout to finish, and the acks sent get their
// confirmations. It returns ErrInterrupted when the timeout cut tasks
// short, or an error that stopped it from running.
func (c *Consumer) Run(ctx context.Context) error {
	if c.ownRegistry != nil {
		defer func() {
			if err := c.ownRegistry.Close(); err != nil {
				c.log.Warn("closing the node executors", "err", err)
			}
		}()
	}
	// Last: the spans of the last tasks reach the collector (tracing.go).
	defer c.stopTracing()
	defer c.announce(ctx)() // in the process registry until Run returns (registry.go)
	if c.fleet != nil {
		watchCtx, stopWatch := context.WithCancel(context.Background())
		defer stopWatch()
		if err := c.fleet.Watch(watchCtx); err != nil {
			if c.acks != nil {
				_ = c.acks.Close(context.Background()) // nothing was acked
			}
			return fmt.Errorf("fleet breaker: %w", err)
		}
	}
	defer c.watchStreamGauges()()
	defer c.followControl(ctx)() // operators' breaker commands; those in force before pulling starts
	c.log.Info("consumer ready", "nats_url", c.o.Conn.ConnectedUrlRedacted(), "stream", c.names.TaskStream, "consumer", c.names.Consumer, "subjects", c.names.TaskPrefix+".>",
		"workers", c.cfg.Consumer.Workers, "prefetch", c.cfg.Consumer.Prefetch, "ack", c.cfg.Consumer.Ack,
		"node_types", strings.Join(c.types, ","), "version", version.String())
	c.warnHeldAtStart(ctx) // a fleet pause, an open breaker: startlog.go
	go func() {
		<-ctx.Done()
		c.log.Info("shutting down: pulling stopped, prefetched tasks handed back, waiting for in-flight tasks", "timeout", c.cfg.Consumer.ShutdownTimeout)
	}()
	finished := c.puller.Run(ctx)
	if c.acks != nil {
		// Every ack was sent before its worker returned; wait for their
		// confirmations a little, not for ever.
		wait, cancel := context.WithTimeout(context.Background(), min(c.worker.AckWait(), 5*time.Second))
		if err := c.acks.Close(wait); err != nil {
			c.log.Warn("some acks were not confirmed before the process stops; their tasks may run again", "err", err)
		}
		cancel()
	}
	if err := c.o.Conn.FlushTimeout(2 * time.Second); err != nil {
		c.log.Warn("flush before close", "err", err)
	}
	c.log.Info("consumer stopped", "clean", finished)
	if !finished {
		return ErrInterrupted
	}
	return nil
}

// Breaker is the consumer's circuit breaker, nil when it has none.
func (c *Consumer) Breaker() *resilience.Breaker { return c.breaker }

// Durable is the durable JetStream consumer it pulls from.
func (c *Consumer) Durable() jetstream.Consumer { return c.durable }

// dlqDepth reads the records in the dead-letter stream for the gauge; -1
// when it cannot.
func (c *Consumer) dlqDepth() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, c.names.DLQStream)
	if err != nil {
		return -1
	}
	info, err := st.Info(ctx)
	if err != nil {
		return -1
	}
	return float64(info.State.Msgs)
}

// ackWait is the shorter of the configured ack_wait and the one the
// consumer has on the server (which this user may not have been allowed to
// change, or another process changed).
func ackWait(configured time.Duration, cons jetstream.Consumer) time.Duration {
	if info := cons.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		return min(configured, info.Config.AckWait)
	}
	return configured
}

// breakerLogger logs breaker state changes and records them in metrics:
// an open breaker pauses pulling.
func breakerLogger(log *slog.Logger, cfg *config.Config, m *metrics.Metrics, name string) func(string, resilience.State, resilience.State) {
	return func(_ string, from, to resilience.State) {
		m.Breaker(name, int(to), to.String())
		m.Paused(name, to == resilience.StateOpen)
		l := log.With("subscription", name, "from", from.String(), "to", to.String())
		switch to {
		case resilience.StateOpen:
			attrs := []any{"failure_threshold", cfg.Breaker.FailureThreshold, "cooldown_max", cfg.Breaker.MaxCooldown.String()}
			if b := cfg.Breaker; b.FailureRate > 0 {
				attrs = append(attrs, "failure_rate", b.FailureRate, "min_requests", b.MinRequests, "window", b.Window.String())
			}
			l.Error("circuit breaker opened: pulling paused, no task starts here", attrs...)
		case resilience.StateHalfOpen:
			l.Warn("circuit breaker half-open: one probe task may run")
		case resilience.StateClosed:
			l.Info("circuit breaker closed: pulling resumed")
		}
	}
}
