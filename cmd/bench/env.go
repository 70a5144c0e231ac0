package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	nconfig "github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// bench is one embedded server (file storage, default sync) shared by every row.
type bench struct {
	srv   *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	names queue.Names
	log   *slog.Logger
}

func newBench(dir string) (*bench, error) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	return &bench{srv: srv, nc: nc, js: js, names: queue.DefaultNames(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil
}

func (b *bench) close() {
	b.nc.Close()
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}

// reset deletes and recreates the streams and the durable consumer, so
// every repetition starts empty.
func (b *bench) reset(ctx context.Context) (jetstream.Consumer, error) {
	return b.resetWith(ctx, queue.StreamOptions{DLQMaxBytes: 8 << 30})
}

// resetWith is reset with the streams created with o.
func (b *bench) resetWith(ctx context.Context, o queue.StreamOptions) (jetstream.Consumer, error) {
	for _, s := range []string{b.names.TaskStream, b.names.DLQStream} {
		_ = b.js.DeleteStream(ctx, s)
	}
	// Re-creating a stream right after deleting it can fail while the
	// server still removes the old store; try again briefly.
	var err error
	for range 20 {
		if err = queue.EnsureStreams(ctx, b.js, b.names, o); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	return queue.EnsureConsumer(ctx, b.js, b.names, queue.ConsumerOptions{})
}

// payload is the 256-byte payload of every benchmark task.
var payload = []byte(fmt.Sprintf("%-256s", "nodeq benchmark payload"))[:256]

// taskMsgs builds n echo task messages (params may be nil).
func (b *bench) taskMsgs(n int, nodeType string, params func(i int) task.Params) ([]*nats.Msg, error) {
	pub := queue.NewPublisher(b.js, b.names)
	msgs := make([]*nats.Msg, n)
	for i := range n {
		env := &task.Envelope{ID: "t" + strconv.Itoa(i), NodeType: nodeType, Payload: payload}
		if params != nil {
			env.Params = params(i)
		}
		m, err := pub.Message(env)
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// publishAll publishes msgs asynchronously and waits for every PubAck.
func (b *bench) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	for _, m := range msgs {
		if _, err := b.js.PublishMsgAsync(m); err != nil {
			return err
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nodeq runs a nodeq consumer (the composition root cmd/consumer runs,
// in the bench process) until stop is called.
type nodeq struct {
	cancel context.CancelFunc
	done   chan struct{}
}

type nodeqOpts struct {
	workers    int
	registry   *executor.Registry
	retry      resilience.Policy
	redelivery resilience.Redelivery
	breaker    *resilience.Breaker
	ack        string // consumer.ack; default confirmed
	onHandled  func(msg jetstream.Msg)
	// onHandedBack is told of every task handed back unrun.
	onHandedBack func(msg jetstream.Msg)
}

func (b *bench) startNodeq(cons jetstream.Consumer, o nodeqOpts) (*nodeq, error) {
	cfg := nconfig.Default()
	cfg.Consumer.Workers = o.workers
	if o.ack != "" {
		cfg.Consumer.Ack = o.ack
	}
	redelivery := o.redelivery
	c, err := consumer.New(context.Background(), consumer.Options{Config: cfg, Conn: b.nc, Logger: b.log, Registry: o.registry, Durable: cons,
		Breaker: o.breaker, Retry: o.retry, Redelivery: &redelivery, OnHandled: o.onHandled, OnHandedBack: o.onHandedBack})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &nodeq{cancel: cancel, done: make(chan struct{})}
	go func() { _ = c.Run(ctx); close(n.done) }()
	return n, nil
}

func (n *nodeq) stop() { n.cancel(); <-n.done }

func echoRegistry() *executor.Registry {
	r := executor.NewRegistry()
	_ = r.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	_ = r.Register(executor.Node{Type: "fault", Executor: executor.Fault()})
	return r
}

// waitCount waits until counter reaches n or the timeout passes.
func waitCount(counter *atomic.Int64, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for counter.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d done after %v", counter.Load(), n, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// peakRSS returns a process's peak resident set size in bytes (Linux).
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// publishPaced publishes msgs at rate per second, storing in sent[i] when
// message i went out (unix nanoseconds), and returns their PubAck futures.
func publishPaced(js jetstream.JetStream, msgs []*nats.Msg, rate float64, sent []atomic.Int64) ([]jetstream.PubAckFuture, error) {
	futs := make([]jetstream.PubAckFuture, len(msgs))
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i, m := range msgs {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		sent[i].Store(time.Now().UnixNano())
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return nil, err
		}
		futs[i] = f
	}
	return futs, nil
}
