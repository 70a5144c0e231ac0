// Package integration runs nodeq end to end against real, embedded
// nats-servers: random ports, temporary stores, no mocks of NATS.
package integration

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// env is one embedded server with nodeq's streams and consumer.
type env struct {
	t     *testing.T
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	names queue.Names
	cons  jetstream.Consumer
}

func newEnv(t *testing.T, so queue.StreamOptions) *env {
	t.Helper()
	return newEnvWith(t, so, queue.ConsumerOptions{})
}

func newEnvWith(t *testing.T, so queue.StreamOptions, co queue.ConsumerOptions) *env {
	t.Helper()
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv)
	return setupEnv(t, srv, nc, js, so, co)
}

// envOn sets nodeq up on a given server and connection.
func envOn(t *testing.T, srv *server.Server, nc *nats.Conn, co queue.ConsumerOptions) *env {
	t.Helper()
	return setupEnv(t, srv, nc, newJS(t, nc), queue.StreamOptions{}, co)
}

func setupEnv(t *testing.T, srv *server.Server, nc *nats.Conn, js jetstream.JetStream, so queue.StreamOptions, co queue.ConsumerOptions) *env {
	t.Helper()
	return setupEnvNamed(t, srv, nc, js, queue.DefaultNames(), so, co)
}

// setupEnvNamed sets nodeq up with the given stream, subject and consumer names.
func setupEnvNamed(t *testing.T, srv *server.Server, nc *nats.Conn, js jetstream.JetStream, names queue.Names, so queue.StreamOptions, co queue.ConsumerOptions) *env {
	t.Helper()
	names, err := names.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := queue.EnsureStreams(ctx, js, names, so); err != nil {
		t.Fatal(err)
	}
	cons, err := queue.EnsureConsumer(ctx, js, names, co)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, nc: nc, js: js, names: names, cons: cons}
}

// testLogger logs to the test output when NODEQ_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("NODEQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// runner is a running consumer: a Puller feeding a Worker.
type runner struct {
	cancel context.CancelFunc
	done   chan bool
}

type runnerOpts struct {
	workers         int
	shutdownTimeout time.Duration
	maxPayload      int
	retryDelay      time.Duration
	retry           resilience.Policy
	redelivery      resilience.Redelivery
	breaker         *resilience.Breaker
	ackWait         time.Duration
	metrics         *metrics.Metrics
	poisonAfter     int
	maxInflight     int64 // consumer.max_inflight_bytes; 0: the default, -1: none
	maxMsgBytes     int64 // with maxInflight; default queue.PullMsgBytes of the stream's default max_msg_size
	noLedger        bool  // run without the delivery ledger
	onInflight      func(int64)
	ack             string // consumer.ack; default confirmed
	prefetch        int    // consumer.prefetch; 0: the default, -1: none
}

// pullWait is the test consumers' pull request expiry.
const pullWait = 200 * time.Millisecond

// start runs a consumer with the given registry until stop.
func (e *env) start(reg *executor.Registry, o runnerOpts) *runner {
	e.t.Helper()
	return e.startWith(reg, o, nil)
}

// startWith is start with a logger (nil: testLogger).
func (e *env) startWith(reg *executor.Registry, o runnerOpts, log *slog.Logger) *runner {
	e.t.Helper()
	if log == nil {
		log = testLogger(e.t)
	}
	if o.workers == 0 {
		o.workers = 4
	}
	// The production wiring, configured as the test asks.
	cfg := config.Default()
	cfg.Names = config.Names{TaskStream: e.names.TaskStream, TaskPrefix: e.names.TaskPrefix, DLQStream: e.names.DLQStream,
		DLQPrefix: e.names.DLQPrefix, Consumer: e.names.Consumer}
	cfg.Consumer.Workers, cfg.Consumer.PullWait, cfg.Consumer.PoisonAfter = o.workers, pullWait, o.poisonAfter
	if o.poisonAfter == 0 {
		cfg.Consumer.PoisonAfter = config.DefaultPoisonAfter
	}
	if o.shutdownTimeout > 0 {
		cfg.Consumer.ShutdownTimeout = o.shutdownTimeout
	}
	if o.ackWait > 0 {
		cfg.Consumer.AckWait = o.ackWait
	}
	if o.ack != "" {
		cfg.Consumer.Ack = o.ack
	}
	if o.prefetch != 0 {
		cfg.Consumer.Prefetch = max(o.prefetch, 0)
	}
	cfg.Consumer.MaxPayload = config.ByteSize(o.maxPayload)
	// As an operator who keeps results in a stream of theirs would allow.
	cfg.Consumer.ReplySubjects = []string{"_INBOX.>", "results.>"}
	switch {
	case o.maxInflight < 0:
		cfg.Consumer.MaxInflightBytes = 0
	case o.maxInflight > 0:
		cfg.Consumer.MaxInflightBytes = config.ByteSize(o.maxInflight)
	}
	cfg.Breaker.FailureThreshold, cfg.Breaker.FailureRate = 0, 0 // only o.breaker
	var redelivery *resilience.Redelivery
	if o.redelivery.MaxDeliveries > 0 {
		redelivery = &o.redelivery
	}
	c, err := consumer.New(context.Background(), consumer.Options{Config: cfg, Conn: e.nc, Logger: log, Metrics: o.metrics, Registry: reg,
		Durable: e.cons, Breaker: o.breaker, Retry: o.retry, Redelivery: redelivery, RetryDelay: o.retryDelay, NoLedger: o.noLedger,
		OnInflightBytes: o.onInflight, MsgBytes: o.maxMsgBytes})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan bool, 1)}
	go func() { r.done <- c.Run(ctx) == nil }()
	e.t.Cleanup(func() { r.stop() })
	return r
}

// stop shuts the consumer down and reports whether in-flight work finished in time.
func (r *runner) stop() bool {
	r.cancel()
	v, ok := <-r.done
	if ok {
		close(r.done)
	}
	return v
}

// counter wraps executors and counts executions per task ID.
type counter struct {
	mu   sync.Mutex
	runs map[string]int
}

func newCounter() *counter { return &counter{runs: map[string]int{}} }

func (c *counter) wrap(ex executor.Executor) executor.Executor {
	return executor.Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		c.mu.Lock()
		c.runs[t.ID]++
		c.mu.Unlock()
		return ex.Execute(ctx, t)
	})
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.runs))
	for k, v := range c.runs {
		m[k] = v
	}
	return m
}

func (c *counter) total() int {
	n := 0
	for _, v := range c.snapshot() {
		n += v
	}
	return n
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *env) ackPending() int {
	e.t.Helper()
	info, err := e.cons.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.NumAckPending
}

// records reads every dead-letter record with its subject.
func (e *env) records() []*dlqMsg {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.js.OrderedConsumer(ctx, e.names.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	n := int(e.streamMsgs(e.names.DLQStream))
	var out []*dlqMsg
	if n == 0 {
		return nil
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	for m := range batch.Messages() {
		rec, err := dlq.Decode(m.Data())
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, &dlqMsg{subject: m.Subject(), header: m.Headers(), rec: rec})
	}
	if len(out) != n {
		e.t.Fatalf("read %d of %d dead-letter records", len(out), n)
	}
	return out
}

type dlqMsg struct {
	subject string
	header  nats.Header
	rec     *dlq.Record
}

func newMsg(m *natsMsg) *nats.Msg {
	msg := nats.NewMsg(m.subject)
	msg.Data = []byte(m.data)
	if m.ct != "" {
		msg.Header.Set("Content-Type", m.ct)
	}
	for k, v := range m.headers {
		msg.Header.Set(k, v)
	}
	return msg
}

// counterValue reads one nodeq_tasks_total series from a registry, as a
// scrape would.
func counterValue(t *testing.T, reg *prometheus.Registry, nodeType, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nodeq_tasks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["node_type"] == nodeType && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// gaugeValue reads an unlabelled gauge.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func sleepRegistry() *executor.Registry {
	r := executor.NewRegistry()
	_ = r.Register(executor.Node{Type: "sleep", Executor: executor.Sleep(time.Minute)})
	return r
}

func newJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// setupEnvRetry sets nodeq up with R3 streams on a cluster, retrying while
// the cluster settles.
func setupEnvRetry(t *testing.T, srv *server.Server, nc *nats.Conn, js jetstream.JetStream) *env {
	t.Helper()
	names := queue.DefaultNames()
	ctx := context.Background()
	var err error
	var cons jetstream.Consumer
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = queue.EnsureStreams(ctx, js, names, queue.StreamOptions{Replicas: 3}); err != nil {
			continue
		}
		if cons, err = queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{AckWait: 2 * time.Second}); err == nil {
			return &env{t: t, srv: srv, nc: nc, js: js, names: names, cons: cons}
		}
	}
	t.Fatalf("cluster setup: %v", err)
	return nil
}
