package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// The breaker's gauges exist from start-up, and a shutdown that cuts a
// task short exits 3, the task handed back to the stream.
func TestInterruptedShutdownExitsThree(t *testing.T) {
	srv := natstest.Server(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(t.TempDir(), "nodeq.yaml")
	if err := os.WriteFile(cfg, []byte("consumer:\n  shutdown_timeout: 200ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, stop := startConsumerRun(t, []string{"--config", cfg, "--nats-url", srv.ClientURL(), "--metrics-addr", addr}, noEnv)

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`nodeq_breaker_state{subscription="nodeq-workers"} 0`, `nodeq_subscription_paused{subscription="nodeq-workers"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics at start-up lack %s", want)
		}
	}

	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	if _, err := queue.NewPublisher(js, names).Publish(context.Background(), &task.Envelope{ID: "long-1", NodeType: "sleep", Params: task.Params{"duration": "1m"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(context.Background(), names.TaskStream, names.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ci, err := cons.Info(context.Background())
		if err == nil && ci.NumAckPending == 1 && ci.NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task was never delivered: %+v, %v", ci, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // into the node's run
	if code := stop(); code != exitInterrupted {
		t.Fatalf("exit %d, want %d: the shutdown interrupted a task", code, exitInterrupted)
	}
	st, err := js.Stream(context.Background(), names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(context.Background()); err != nil || info.State.Msgs != 1 {
		t.Fatalf("task stream after the interrupted shutdown: %+v, %v; want the task kept", info.State, err)
	}
}
