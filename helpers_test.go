package nodeq_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq"
	"github.com/nodeq/nodeq/internal/dlq"
)

// startServer starts an embedded server on a random port in a temporary
// directory, shut down when the test ends.
func startServer(t *testing.T) *nodeq.Server {
	t.Helper()
	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// testConfig is the default configuration on srv with short retry and
// redelivery delays.
func testConfig(srv *nodeq.Server) *nodeq.Config {
	cfg := nodeq.DefaultConfig()
	cfg.NATS.URL = srv.URL()
	cfg.Retry.Delay, cfg.Retry.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
	cfg.Redelivery.Backoff = []time.Duration{50 * time.Millisecond}
	cfg.Consumer.ShutdownTimeout = 10 * time.Second
	return cfg
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// handlers maps node types to Go handlers for startConsumer.
type handlers map[string]nodeq.Handler

// newConsumer builds a consumer of cfg with hs registered.
func newConsumer(t *testing.T, cfg *nodeq.Config, hs handlers, opts ...nodeq.ConsumerOption) *nodeq.Consumer {
	t.Helper()
	c, err := nodeq.NewConsumer(cfg, append([]nodeq.ConsumerOption{nodeq.WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for nodeType, h := range hs {
		if err := c.Handle(nodeType, h); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// startConsumer starts a consumer of cfg with hs registered, stopped (and
// checked for a clean stop) when the test ends.
func startConsumer(t *testing.T, cfg *nodeq.Config, hs handlers, opts ...nodeq.ConsumerOption) *nodeq.Consumer {
	t.Helper()
	c := newConsumer(t, cfg, hs, opts...)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return c
}

// newClient connects a client with cfg, closed when the test ends.
func newClient(t *testing.T, cfg *nodeq.Config) *nodeq.Client {
	t.Helper()
	client, err := nodeq.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return client
}

// callCtx bounds a Call: a result that never comes fails the test instead
// of hanging it.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// inspect connects a plain JetStream handle to srv, to look at the streams
// as an operator would.
func inspect(t *testing.T, srv *nodeq.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamLastSeq is the sequence of the last message a stream stored.
func streamLastSeq(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// streamMsgs is how many messages a stream holds.
func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// deadLetters reads every record of the default dead-letter stream.
func deadLetters(t *testing.T, js jetstream.JetStream) []*dlq.Record {
	t.Helper()
	var recs []*dlq.Record
	err := dlq.NewStore(js, "NODEQ_DLQ", "dlq").Scan(t.Context(), &dlq.Filter{}, 0, func(e dlq.Entry) error {
		if e.Err != nil {
			return e.Err
		}
		recs = append(recs, e.Record)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// eventually polls cond until it holds, failing the test after a generous
// bound (a liveness guard, not a timing target).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counterValue reads one nodeq_tasks_total series, as a scrape would.
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

// freeAddr returns a loopback address that was free a moment ago, for
// settings that need a fixed address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
