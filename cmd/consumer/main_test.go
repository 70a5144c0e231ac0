package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/natstest"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine returns the first JSON log record with the given msg.
func (b *syncBuffer) logLine(msg string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

func noEnv(string) string { return "" }

// TestEmbeddedStartPath runs the consumer's main path with no NATS URL: it
// must start an embedded server, run a published task, and stop cleanly.
func TestEmbeddedStartPath(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--log-format", "json", "--workers", "2", "--metrics-addr", "127.0.0.1:0"}, &logs, noEnv)
	}()
	deadline := time.Now().Add(15 * time.Second)
	var ready map[string]any
	for ready == nil {
		if time.Now().After(deadline) {
			t.Fatalf("consumer never became ready; logs:\n%s", logs.String())
		}
		select {
		case code := <-exit:
			t.Fatalf("consumer exited with %d; logs:\n%s", code, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		ready = logs.logLine("consumer ready")
	}
	embedded := logs.logLine("embedded nats-server listening")
	if embedded == nil || embedded["store_dir"] != dir {
		t.Fatalf("no embedded-server log line with the store dir: %v", embedded)
	}
	url, _ := ready["nats_url"].(string)

	echoThrough(t, url)
	ml := logs.logLine("metrics listening")
	if ml == nil {
		t.Fatal("no metrics listener logged")
	}
	// The result is sent just before the ack; the count follows the ack.
	var body []byte
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + ml["addr"].(string) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `nodeq_tasks_total{node_type="echo",outcome="succeeded"} 1`) {
			break
		}
	}
	if !strings.Contains(string(body), `nodeq_tasks_total{node_type="echo",outcome="succeeded"} 1`) {
		t.Fatalf("metrics do not count the task:\n%s", body)
	}
	for _, want := range []string{"nodeq_dlq_messages 0", `nodeq_task_attempts_count{node_type="echo"} 1`, "nodeq_pull_seconds_count", "nodeq_tasks_in_flight 0"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + ml["addr"].(string) + path)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("%s: %v %v", path, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("store dir not used: %v", err)
	}

	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d after shutdown; logs:\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not stop")
	}
	if stopped := logs.logLine("consumer stopped"); stopped == nil || stopped["clean"] != true {
		t.Fatalf("no clean stop logged:\n%s", logs.String())
	}
}

func TestBadConfigExitsWithLocation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeq.yaml")
	os.WriteFile(path, []byte("consumer:\n  workers: 4\nnodes:\n  resize:\n    executor: process\n    timeout: 1s\n"), 0o644)
	var out syncBuffer
	code := run(context.Background(), []string{"--config", path}, &out, noEnv)
	if code != exitConfig || !strings.Contains(out.String(), path+":4: nodes.resize.command: required") {
		t.Fatalf("exit %d, output:\n%s", code, out.String())
	}
	out = syncBuffer{}
	if code := run(context.Background(), []string{"--workers", "x"}, &out, noEnv); code != exitConfig {
		t.Fatalf("bad flag: exit %d", code)
	}
}

func TestUnreachableNATSExitsWithURL(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	var out syncBuffer
	env := func(k string) string {
		if k == "NATS_URL" {
			return "nats://user:hunter2@" + addr
		}
		return ""
	}
	code := run(context.Background(), nil, &out, env)
	if code != exitFailed || !strings.Contains(out.String(), "connect to NATS at nats://user:xxxxx@"+addr) {
		t.Fatalf("exit %d, output:\n%s", code, out.String())
	}
	if strings.Contains(out.String(), "hunter2") {
		t.Fatal("password in output")
	}
}

// TestAuthenticatedServer runs the consumer against a server that requires a
// password, given by flag and environment; a wrong one exits at once.
func TestAuthenticatedServer(t *testing.T) {
	s := natstest.ServerWith(t, func(o *server.Options) { o.Username, o.Password = "svc", "s3cret-pw" })
	env := func(pw string) func(string) string {
		return func(k string) string {
			if k == "NODEQ_NATS_PASSWORD" {
				return pw
			}
			return ""
		}
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--nats-url", s.ClientURL(), "--nats-user", "svc", "--log-format", "json"}, &logs, env("s3cret-pw"))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for logs.logLine("consumer ready") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-exit; code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(logs.String(), "s3cret-pw") {
		t.Fatal("password in the logs")
	}

	var out syncBuffer
	code := run(context.Background(), []string{"--nats-url", s.ClientURL(), "--nats-user", "svc"}, &out, env("wrong-pw"))
	if code != exitFailed || !strings.Contains(out.String(), "Authorization Violation") || strings.Contains(out.String(), "wrong-pw") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}

// --check-config prints the configuration with the defaults filled in
// (each node's too: the values the consumer runs with, not the zeros of
// keys left out) and secrets masked, and exits 0 without connecting. A zero
// that stands for no value (decided at start, or none) says so.
func TestCheckConfigShowsResolvedValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeq.yaml")
	yml := `streams: {max_msg_size: 512KiB}
nodes:
  sleep: {}
  resize: {executor: process, command: [/bin/cat], timeout: 30s, env: {API_KEY: s3cret-env}}
  pool: {executor: worker, command: [cat], timeout: 30s, max_output: 0, pool_size: 0}
  notify:
    executor: http
    url: https://hooks.internal/notify?key=s3cret-query
    timeout: 10s
    headers: {Authorization: Bearer s3cret-header}
`
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	env := func(k string) string {
		return map[string]string{"NODEQ_NATS_PASSWORD": "s3cret-pw", "NODEQ_CONSUMER_WORKERS": "7"}[k]
	}
	if code := runTo(context.Background(), []string{"--config", path, "--check-config"}, &stdout, &stderr, env); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "# configuration OK: 4 node types (notify, pool, resize, sleep); defaults filled in, secrets masked\n") {
		t.Fatalf("header:\n%s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Fatalf("a secret is printed:\n%s", out)
	}
	var printed struct {
		Consumer struct {
			Workers    int    `yaml:"workers"`
			MaxPayload string `yaml:"max_payload"`
		} `yaml:"consumer"`
		Nodes map[string]map[string]any `yaml:"nodes"`
	}
	if err := yaml.Unmarshal([]byte(out), &printed); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if printed.Consumer.Workers != 7 {
		t.Errorf("consumer.workers %d, want the environment's 7", printed.Consumer.Workers)
	}
	if printed.Consumer.MaxPayload != "512KiB" {
		t.Errorf("consumer.max_payload %s, want streams.max_msg_size's 512KiB, which the consumer uses for 0", printed.Consumer.MaxPayload)
	}
	for node, want := range map[string]map[string]any{
		"sleep":  {"executor": "sleep", "max_duration": "1h0m0s", "timeout": "0s"},
		"resize": {"executor": "process", "max_output": "16MiB", "timeout": "30s"},
		"notify": {"executor": "http", "max_response": "16MiB", "timeout": "10s", "url": "https://hooks.internal/notify?key=*****"},
		"pool":   {"executor": "worker", "max_output": "16MiB", "pool_size": 2, "startup_timeout": "10s", "max_tasks_per_process": 0},
	} {
		for key, v := range want {
			if got := printed.Nodes[node][key]; got != v {
				t.Errorf("nodes.%s.%s = %v, want %v", node, key, got, v)
			}
		}
	}
	if _, shown := printed.Nodes["sleep"]["command"]; shown {
		t.Errorf("a sleep node shows process keys:\n%s", out)
	}
	for _, line := range []string{
		"\n        timeout: 0s # none of its own",
		"\n        concurrency: 0 # no limit of its own: consumer.workers bounds it\n",
		"\n        max_tasks_per_process: 0 # never replaced\n",
		"\n        timeout: 30s\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("no line %q:\n%s", line[1:], out)
		}
	}
}

// The flags' help shows the configuration's defaults.
func TestFlagHelpShowsConfigDefaults(t *testing.T) {
	var stdout, stderr syncBuffer
	if code := runTo(context.Background(), []string{"--help"}, &stdout, &stderr, noEnv); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	cfg := config.Default()
	help := stdout.String()
	for flag, want := range map[string]string{
		"--listen":     cfg.Embedded.Listen,
		"--data-dir":   cfg.Embedded.StoreDir,
		"--workers":    strconv.Itoa(cfg.Consumer.Workers),
		"--log-format": cfg.Log.Format,
		"--log-level":  cfg.Log.Level,
	} {
		_, line, ok := strings.Cut(help, flag+" ")
		line, _, _ = strings.Cut(line, "\n")
		if !ok || !strings.HasSuffix(line, "(default "+want+")") {
			t.Errorf("%s: help %q, want it to end with (default %s)", flag, line, want)
		}
	}
	if !strings.Contains(help, "listening on "+cfg.Embedded.Listen+" and storing in "+cfg.Embedded.StoreDir) {
		t.Errorf("the description does not name the default address and store:\n%s", help)
	}
}
