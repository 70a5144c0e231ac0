package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// A task stream that accepts tasks too large to dead-letter is refused at
// start, whether the configuration asks for it or an existing stream has it.
func TestTaskSizeMustLeaveRoomForTheRecord(t *testing.T) {
	srv := natstest.Server(t)
	url := srv.ClientURL()
	cfg := filepath.Join(t.TempDir(), "nodeq.yaml")
	if err := os.WriteFile(cfg, []byte("streams:\n  max_msg_size: 1MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	code := run(context.Background(), []string{"--config", cfg, "--nats-url", url}, &out, noEnv)
	if code != exitFailed || !strings.Contains(out.String(), "streams.max_msg_size 1MiB is too large for the server's max_payload of 1MiB") ||
		!strings.Contains(out.String(), "at most 992KiB") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}

	// With the default (0), the consumer sets the stream to the largest size
	// a record has room for.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	out = syncBuffer{}
	go func() { done <- run(ctx, []string{"--nats-url", url, "--workers", "1"}, &out, noEnv) }()
	// Wait until it is ready: cancelling during set-up would leave the
	// server creating a stream while the test shuts it down.
	for !strings.Contains(out.String(), "consumer ready") {
		select {
		case code := <-done:
			t.Fatalf("exited %d:\n%s", code, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	_, js := natstest.Connect(t, srv)
	s, err := js.Stream(context.Background(), queue.DefaultNames().TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	maxMsg := s.CachedInfo().Config.MaxMsgSize
	cancel()
	<-done
	if maxMsg != 992<<10 {
		t.Fatalf("task stream max_msg_size %d, want 992 KiB", maxMsg)
	}
}
