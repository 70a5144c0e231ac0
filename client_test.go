package nodeq_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq"
)

// Hostile or mistaken tasks get a clear error before anything is sent.
func TestPublishRefusesBadTasks(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	startConsumer(t, cfg, handlers{"ok": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) { return nil, nil }})
	client := newClient(t, cfg)
	js := inspect(t, srv)
	cases := []struct {
		name     string
		nodeType string
		payload  []byte
		opts     []nodeq.PublishOption
		want     string
	}{
		{"empty node type", "", nil, nil, `invalid node type ""`},
		{"wildcard node type", "tasks.>", nil, nil, "invalid node type"},
		{"control character in the id", "ok", nil, []nodeq.PublishOption{nodeq.WithTaskID("a\x1b[31mb")}, "field id: control character"},
		{"huge id", "ok", nil, []nodeq.PublishOption{nodeq.WithTaskID(strings.Repeat("i", 300))}, "field id: 300 bytes"},
		{"bidi control in the correlation id", "ok", nil, []nodeq.PublishOption{nodeq.WithCorrelationID("a\u202eb")}, "field correlation_id"},
		{"payload over the server's max_payload", "ok", bytes.Repeat([]byte("x"), 2<<20), nil, "maximum payload"},
	}
	for _, tc := range cases {
		id, err := client.Publish(t.Context(), tc.nodeType, tc.payload, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || id != "" {
			t.Errorf("%s: Publish = %q, %v; want an error containing %q", tc.name, id, err, tc.want)
		}
	}
	if n := streamMsgs(t, js, "NODEQ_TASKS"); n != 0 {
		t.Fatalf("%d refused tasks reached the stream", n)
	}
}

// Publishing before any consumer created the streams says what to do.
func TestPublishWithoutStreams(t *testing.T) {
	srv := startServer(t)
	_, err := newClient(t, testConfig(srv)).Publish(t.Context(), "echo", nil)
	if err == nil || !strings.Contains(err.Error(), "start a consumer first") {
		t.Fatalf("Publish with no streams = %v", err)
	}
}

// Call gives up when its context ends, saying the task stays queued; a
// second Call with the same task ID is refused as a duplicate.
func TestCallContextAndDuplicate(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	release := make(chan struct{})
	startConsumer(t, cfg, handlers{"held": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		<-release
		return []byte("late"), nil
	}})
	defer close(release)
	client := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := client.Call(ctx, "held", nil, nodeq.WithTaskID("once"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no result for task once") {
		t.Fatalf("Call past its deadline = %v", err)
	}
	_, err = client.Call(callCtx(t), "held", nil, nodeq.WithTaskID("once"))
	if !errors.Is(err, nodeq.ErrDuplicate) {
		t.Fatalf("a second Call with the same id = %v, want ErrDuplicate", err)
	}
}

// With an empty NATS URL the consumer starts the embedded server the
// configuration describes, as cmd/consumer does, and a client of the same
// configuration finds it; Stop shuts it down and frees its directory.
func TestEmbeddedServerFromConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(startServer(t))
	cfg.NATS.URL = ""
	cfg.Embedded.Listen, cfg.Embedded.StoreDir = freeAddr(t), dir
	c := newConsumer(t, cfg, handlers{"greet": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		return []byte("hello"), nil
	}})
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	client := newClient(t, cfg)
	res, err := client.Call(callCtx(t), "greet", nil)
	if err != nil || string(res.Output) != "hello" {
		t.Fatalf("Call = %+v, %v", res, err)
	}
	client.Close()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("the store directory is still held after Stop: %v", err)
	}
	srv.Shutdown()

	cfg.Embedded.Listen = "127.0.0.1:0"
	if _, err := nodeq.NewClient(cfg); err == nil || !strings.Contains(err.Error(), "set NATS.URL") {
		t.Fatalf("NewClient with no URL and a random embedded port = %v", err)
	}
}

// StartServer needs a store directory, and refuses one another server holds.
func TestStartServerErrors(t *testing.T) {
	if _, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "StoreDir is required") {
		t.Fatalf("StartServer without StoreDir = %v", err)
	}
	dir := t.TempDir()
	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if _, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second server on the same directory = %v", err)
	}
	srv.Shutdown()
	srv.Shutdown() // twice is fine
}

// metrics.addr is served as by cmd/consumer; WithMetrics beside it is refused.
func TestMetrics(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	cfg.Metrics.Addr = freeAddr(t)
	if _, err := nodeq.NewConsumer(cfg, nodeq.WithMetrics(prometheus.NewRegistry())); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("metrics.addr with WithMetrics = %v", err)
	}
	startConsumer(t, cfg, handlers{"greet": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) { return nil, nil }})
	if _, err := newClient(t, cfg).Call(callCtx(t), "greet", nil); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + cfg.Metrics.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The result is published before the ack and the count: wait for it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, body := get("/metrics")
		if code == 200 && strings.Contains(body, `nodeq_tasks_total{node_type="greet",outcome="succeeded"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: %d\n%s", code, body)
		}
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d while running", code)
	}

	reg := prometheus.NewRegistry()
	cfg.Metrics.Addr = ""
	if _, err := nodeq.NewConsumer(cfg, nodeq.WithMetrics(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeq.NewConsumer(cfg, nodeq.WithMetrics(reg)); err == nil || !strings.Contains(err.Error(), "one consumer's metrics") {
		t.Fatalf("a second consumer on one registerer = %v", err)
	}
}

// Configuration: the file cmd/consumer reads, its errors, and what
// NewConsumer and Start refuse.
func TestConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeq.yaml")
	if err := os.WriteFile(path, []byte("consumer:\n  workers: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := nodeq.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nodeq.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// As in cmd/consumer, a file without nodes runs the default node types.
	if got := strings.Join(c.NodeTypes(), ","); cfg.Consumer.Workers != 3 || got != "echo,fault,sleep" {
		t.Fatalf("workers %d, node types %s", cfg.Consumer.Workers, got)
	}

	if err := os.WriteFile(path, []byte("consumer:\n  workers: many\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeq.LoadConfig(path); err == nil || !strings.Contains(err.Error(), path+":2: consumer.workers") {
		t.Fatalf("a bad file = %v, want its file, line and field", err)
	}
	if _, err := nodeq.LoadConfig(""); err == nil {
		t.Fatal("LoadConfig(\"\") = nil error")
	}

	bad := nodeq.DefaultConfig()
	bad.Consumer.Workers = 0
	if _, err := nodeq.NewConsumer(bad); err == nil || !strings.Contains(err.Error(), "consumer.workers") {
		t.Fatalf("NewConsumer with 0 workers = %v", err)
	}
	// DefaultConfig declares no node types: Go handlers are enough, and
	// without any Start says what is missing.
	empty, err := nodeq.NewConsumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := empty.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "no node types") {
		t.Fatalf("Start with no node types = %v", err)
	}
	if err := empty.Stop(); err != nil {
		t.Fatalf("Stop after a failed Start = %v", err)
	}

	// Later changes to the configuration do not reach a built consumer.
	cfg = nodeq.DefaultConfig()
	c, err = nodeq.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Nodes["echo"] = nodeq.NodeConfig{}
	if err := c.Handle("echo", func(ctx context.Context, tk *nodeq.Task) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatalf("Handle(echo) after echo was added to the caller's config: %v", err)
	}
}

// Call waits under an inbox the consumers' consumer.reply_subjects allow:
// with only app1.> allowed (docs/security.md's own inbox prefix per
// application), Call used _INBOX and every task was dead-lettered as
// invalid without running while Call waited until its ctx ended.
func TestCallInboxFollowsReplySubjects(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv)
	cfg.Consumer.ReplySubjects = []string{"app1.>"}
	startConsumer(t, cfg, handlers{"greet": func(ctx context.Context, tk *nodeq.Task) ([]byte, error) {
		return []byte("hi"), nil
	}})
	res, err := newClient(t, cfg).Call(callCtx(t), "greet", nil)
	if err != nil || string(res.Output) != "hi" {
		t.Fatalf("Call with reply_subjects [app1.>] = %+v, %v", res, err)
	}
	if recs := deadLetters(t, inspect(t, srv)); len(recs) != 0 {
		t.Fatalf("%d dead letters, first %s: %s", len(recs), recs[0].Reason, recs[0].Error)
	}

	cfg.Consumer.ReplySubjects = []string{"app1.*.results"}
	client := newClient(t, cfg)
	before := streamLastSeq(t, inspect(t, srv), "NODEQ_TASKS")
	if _, err := client.Call(callCtx(t), "greet", nil); err == nil || !strings.Contains(err.Error(), "reply_subjects") {
		t.Fatalf("Call with no usable inbox = %v, want an error before publishing", err)
	}
	if after := streamLastSeq(t, inspect(t, srv), "NODEQ_TASKS"); after != before {
		t.Fatalf("%d tasks published by a Call that cannot wait", after-before)
	}
}
