package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/worker"
)

// startConsumer runs an in-process consumer with echo and fault nodes.
func startConsumer(t *testing.T) string {
	t.Helper()
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	ctx, cancel := context.WithCancel(context.Background())
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	_ = reg.Register(executor.Node{Type: "fault", Executor: executor.Fault()})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := worker.New(worker.Options{Names: names, Registry: reg, DLQ: dlq.NewWriter(js, names.DLQPrefix), Replier: nc, Logger: log,
		Retry: resilience.Fixed(time.Millisecond, 2), Redelivery: resilience.Redelivery{MaxDeliveries: 1}})
	done := make(chan struct{})
	go func() {
		queue.NewPuller(nc, cons, w.Handle, queue.PullOptions{PullWait: 200 * time.Millisecond, Logger: log}).Run(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return srv.ClientURL()
}

func runProducer(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb, func(string) string { return "" })
	return code, out.String(), errb.String()
}

func TestPublishWait(t *testing.T) {
	url := startConsumer(t)
	code, out, errOut := runProducer(t, "", "publish", "echo", `{"text":"hi"}`, "--wait", "--nats-url", url)
	if code != exitOK || out != "{\"text\":\"hi\"}\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, _ = runProducer(t, "from stdin", "publish", "echo", "--payload-file", "-", "--wait", "--json", "--nats-url", url, "--node-id", "n1")
	var res map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &res) != nil || res["ok"] != true || res["node_id"] != "n1" || res["output_base64"] == nil {
		t.Fatalf("exit %d, stdout %q", code, out)
	}

	code, _, errOut = runProducer(t, "", "publish", "fault", "--param", "kind=Transport", "--param", `message="downstream down"`, "--wait", "--nats-url", url)
	if code != exitFailed || !strings.Contains(errOut, "failed (Transport) after 2 attempt(s)") || !strings.Contains(errOut, "downstream down") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestPublishFile(t *testing.T) {
	url := startConsumer(t)
	path := filepath.Join(t.TempDir(), "tasks.jsonl")
	lines := `{"node_type":"echo","payload":{"i":1}}
{"id":"fixed","node_type":"echo"}
not json
{"id":"fixed","node_type":"echo"}
{"node_type":"bad.type"}
`
	os.WriteFile(path, []byte(lines), 0o644)
	code, out, errOut := runProducer(t, "", "publish", "--file", path, "--nats-url", url)
	if code != exitFailed || !strings.Contains(out, "published 2, duplicates 1, failed 2") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "line 3:") || !strings.Contains(errOut, "invalid node type") {
		t.Fatalf("stderr does not say which lines failed: %q", errOut)
	}
	code, out, _ = runProducer(t, `{"node_type":"echo"}`+"\n", "publish", "--file", "-", "--nats-url", url)
	if code != exitOK || !strings.Contains(out, "published 1, duplicates 0, failed 0") {
		t.Fatalf("stdin: exit %d, %q", code, out)
	}
}

func TestPublishErrors(t *testing.T) {
	srv := natstest.Server(t) // no streams: nobody ran a consumer yet
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"publish"}, exitUsage, "want NODE_TYPE"},
		{[]string{"publish", "a.b", "x"}, exitUsage, "invalid node type"},
		{[]string{"publish", "echo", "x", "--param", "novalue"}, exitUsage, "KEY=VALUE"},
		{[]string{"publish", "--file", "x", "echo"}, exitUsage, "--file takes no"},
		{[]string{"publish", "echo", "--bogus"}, exitUsage, "unknown flag"},
		{[]string{"publish", "echo", "x", "--nats-url", srv.ClientURL(), "--timeout", "2s"}, exitFailed, "start a consumer once"},
		{[]string{"publish", "echo", "x", "--nats-url", "nats://127.0.0.1:1"}, exitFailed, "connect to NATS at nats://127.0.0.1:1"},
	}
	for _, c := range cases {
		code, _, errOut := runProducer(t, "", c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d containing %q", c.args, code, errOut, c.code, c.want)
		}
	}
}

// A failed task's error comes from its node (an HTTP body, a process's
// stderr): publish --wait prints it escaped, as dlq list and show do.
func TestPublishWaitEscapesTheError(t *testing.T) {
	url := startConsumer(t)
	code, _, errOut := runProducer(t, "", "publish", "fault", "--param", "kind=Other", "--param", `message="\u001b]0;pwned\u0007\u001b[2J"`, "--wait", "--nats-url", url)
	if code != exitFailed || strings.ContainsAny(errOut, "\x1b\x07") || !strings.Contains(errOut, `\x1b]0;pwned\x07\x1b[2J`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
