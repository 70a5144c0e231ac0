package nodeq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
)

// ErrInterrupted is returned by Run and Stop when consumer.shutdown_timeout
// cut in-flight tasks short: their handlers' ctx ended, and the tasks were
// handed back to run again on another delivery.
var ErrInterrupted = consumer.ErrInterrupted

// ConsumerOption configures NewConsumer; see WithLogger, WithMetrics and
// WithTracerProvider.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	log *slog.Logger
	reg prometheus.Registerer
	tp  trace.TracerProvider
}

// WithLogger sets the logger of the consumer's structured logs (start,
// failures, retries, dead letters, breaker changes, shutdown). Default
// slog.Default().
func WithLogger(l *slog.Logger) ConsumerOption {
	return func(o *consumerOptions) { o.log = l }
}

// WithMetrics registers the consumer's Prometheus metrics (the nodeq_*
// series of cmd/consumer, listed in docs/operations.md) with reg, for the
// program to serve, e.g. with promhttp. Without it, and without
// metrics.addr in the configuration, the consumer records no metrics. A
// registerer takes one consumer's metrics.
func WithMetrics(reg prometheus.Registerer) ConsumerOption {
	return func(o *consumerOptions) { o.reg = reg }
}

// WithTracerProvider records the consumer's spans (a span per task, per
// attempt, per backoff wait and for the settle step; docs/operations.md,
// "Tracing") with the program's own OpenTelemetry tracer provider, which
// the program shuts down. Without it, the configuration's tracing section
// decides: an OTLP/HTTP exporter when tracing.otlp_endpoint is set, no
// spans otherwise. While tracing is on, a handler's ctx carries its
// attempt's span: spans the handler starts from it join the task's trace.
func WithTracerProvider(tp trace.TracerProvider) ConsumerOption {
	return func(o *consumerOptions) { o.tp = tp }
}

// Consumer runs the tasks of its node types: the handlers registered with
// Handle and the node types the configuration declares. It is cmd/consumer
// in a program: the same set-up of streams and durable consumer, workers,
// retries, redelivery, circuit breaker, dead letters, metrics and
// graceful shutdown. Consumers in any number of processes (and
// cmd/consumer) share the tasks of one NATS server or cluster.
//
// Build it with NewConsumer, register handlers, then Start it (or Run it)
// once.
type Consumer struct {
	cfg      *Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	registry *executor.Registry
	tp       trace.TracerProvider // WithTracerProvider's; nil: the configuration's

	mu      sync.Mutex
	url     string // the server the started consumer connected to
	started bool
	stop    context.CancelFunc
	done    chan struct{} // closed when the consumer has stopped
	err     error         // why it stopped, once done is closed
}

// NewConsumer validates cfg (nil means DefaultConfig()) and returns a
// consumer of its node types; it connects to nothing until Start. It
// copies cfg's fields and its Nodes map: set cfg up before, and changes
// after do not reach the consumer (do not modify the slices inside).
func NewConsumer(cfg *Config, opts ...ConsumerOption) (*Consumer, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	own := *cfg
	own.Nodes = maps.Clone(cfg.Nodes)
	var o consumerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if err := validate(&own); err != nil {
		return nil, fmt.Errorf("nodeq: invalid configuration:\n%w", err)
	}
	if o.reg != nil && own.Metrics.Addr != "" {
		return nil, fmt.Errorf("nodeq: metrics.addr %q and WithMetrics both set: serve the metrics either from the configuration's address or from the registerer", own.Metrics.Addr)
	}
	registry, err := own.Registry()
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	c := &Consumer{cfg: &own, log: o.log, registry: registry, tp: o.tp}
	if o.reg != nil {
		if c.metrics, err = newMetrics(o.reg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// newMetrics registers the nodeq metrics with reg, returning an error
// instead of the registry's panic when they are registered already.
func newMetrics(reg prometheus.Registerer) (m *metrics.Metrics, err error) {
	defer func() {
		if r := recover(); r != nil {
			cause, ok := r.(error)
			if !ok {
				cause = fmt.Errorf("%v", r)
			}
			m, err = nil, fmt.Errorf("nodeq: WithMetrics: %w (a registerer takes one consumer's metrics)", cause)
		}
	}()
	return metrics.New(reg), nil
}

// Handle registers h as the handler of nodeType, with its options. The
// node type is 1 to 64 of A-Z a-z 0-9 _ - and must not be registered
// twice or be declared in the configuration's nodes. Register every
// handler before Start.
func (c *Consumer) Handle(nodeType string, h Handler, opts ...HandlerOption) error {
	if err := checkNodeType(nodeType); err != nil {
		return fmt.Errorf("nodeq: Handle: %w", err)
	}
	if h == nil {
		return fmt.Errorf("nodeq: Handle %q: nil handler", nodeType)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("nodeq: Handle %q: the consumer has started; register handlers before Start", nodeType)
	}
	if _, configured := c.cfg.Nodes[nodeType]; configured {
		return fmt.Errorf("nodeq: Handle %q: node type already declared in the configuration (nodes.%s); remove it there or choose another name", nodeType, nodeType)
	}
	if _, dup := c.registry.Lookup(nodeType); dup {
		return fmt.Errorf("nodeq: Handle %q: node type registered twice", nodeType)
	}
	var o handlerOptions
	for _, opt := range opts {
		opt(&o)
	}
	n := executor.Node{Type: nodeType, Executor: h.executor(), Timeout: o.timeout, Concurrency: o.concurrency}
	if err := c.registry.Register(n); err != nil {
		return fmt.Errorf("nodeq: Handle: %w", err)
	}
	return nil
}

// NodeTypes returns the node types the consumer runs, sorted: the
// registered handlers and the configured node types.
func (c *Consumer) NodeTypes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.registry.Types()
}

// Start connects to NATS (or, with an empty NATS.URL, starts the embedded
// server Embedded describes, as cmd/consumer does), creates or updates the
// streams and the durable consumer within consumer.startup_timeout, and
// returns: from then on tasks published are stored and run. The consumer
// runs until ctx is done or Stop is called. A Consumer starts once, even
// when Start failed.
func (c *Consumer) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("nodeq: Start: the consumer was already started; a Consumer runs once")
	}
	c.started = true
	if len(c.registry.Types()) == 0 {
		return errors.New("nodeq: Start: no node types: register a handler with Handle or declare node types in the configuration's nodes")
	}
	runCtx, stop := context.WithCancel(ctx)
	r, err := c.setUp(runCtx)
	if err != nil {
		stop()
		return err
	}
	c.stop, c.done = stop, make(chan struct{})
	go func() {
		defer close(c.done)
		err := r.consumer.Run(runCtx)
		stop()
		r.close()
		c.err = err
	}()
	return nil
}

// Stop begins the shutdown, as when Start's ctx is done, and waits for it:
// pulling stops, prefetched tasks go back to the stream, in-flight tasks
// get consumer.shutdown_timeout to finish and are acked, then the
// connection (and the embedded server the consumer started) closes. It
// returns ErrInterrupted when the timeout cut tasks short, or the error
// that stopped the consumer. Stop before Start does nothing; Stop may be
// called more than once.
func (c *Consumer) Stop() error {
	c.mu.Lock()
	stop, done := c.stop, c.done
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	stop()
	<-done
	return c.err
}

// Run is Start, then Stop once ctx is done: it returns when the consumer
// has shut down, nil after a clean shutdown, ErrInterrupted when
// consumer.shutdown_timeout cut tasks short, or the error that kept it
// from starting or running.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-c.done
	return c.err
}

// running is what a started consumer holds, closed in reverse order.
type running struct {
	consumer *consumer.Consumer
	closers  []func()
}

func (r *running) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// setUp does what cmd/consumer's serve does before it runs: the metrics
// listener, the embedded server when no URL is set, the connection with the
// consumer inbox and the configured credentials, and consumer.New. ctx is
// the consumer's run: readiness ends with it.
func (c *Consumer) setUp(ctx context.Context) (_ *running, err error) {
	cfg, log := c.cfg, c.log
	r := &running{}
	defer func() {
		if err != nil {
			r.close() // r, not the nil result: what was opened so far
		}
	}()
	// Closed last: the node executors (a compiled module, worker processes).
	r.closers = append(r.closers, func() {
		if err := c.registry.Close(); err != nil {
			log.Warn("closing the node executors", "err", err)
		}
	})
	m := c.metrics
	probe, err := metrics.ServeProbes(cfg.Metrics.Addr, log)
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	if probe != nil {
		r.closers = append(r.closers, probe.Stop)
		m = probe.Series()
	}
	nc, closeConn, err := consumer.Dial(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	r.closers = append(r.closers, closeConn)
	setupCtx, cancel := context.WithTimeout(ctx, cfg.Consumer.StartupTimeout)
	defer cancel()
	if r.consumer, err = consumer.New(setupCtx, consumer.Options{Config: cfg, Conn: nc, Logger: log, Metrics: m, Registry: c.registry, TracerProvider: c.tp}); err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	probe.SetReady(func() bool { return ctx.Err() == nil && nc.IsConnected() })
	c.url = nc.ConnectedUrl() // c.mu is held by Start; only a started consumer has one
	return r, nil
}

// Client returns a client connected to the NATS server the started
// consumer uses (the embedded one it started, when the configuration names
// no URL), with the configuration's credentials and stream names: the
// shortest way for a program to publish to its own consumer. Close it when
// done.
func (c *Consumer) Client() (*Client, error) {
	c.mu.Lock()
	url := c.url
	c.mu.Unlock()
	if url == "" {
		return nil, errors.New("nodeq: Client: the consumer is not started")
	}
	auth := c.cfg.Auth()
	if c.cfg.NATS.URL == "" {
		auth.CAFile, auth.CertFile, auth.KeyFile, auth.ServerName = "", "", "", "" // the embedded server serves no TLS
	}
	return dialClient(url, auth, c.cfg.QueueNames(), c.cfg.Consumer.ReplySubjects)
}
