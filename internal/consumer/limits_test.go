package consumer

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

func TestCheckTaskStream(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	cfg := queue.TaskStreamConfig(names, queue.StreamOptions{})
	cfg.MaxMsgSize = -1 // an operator's stream without a limit of its own
	if _, err := js.CreateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	err := checkTaskStream(context.Background(), js, names, 992<<10, nil)
	if err == nil || !strings.Contains(err.Error(), "no limit of its own") || !strings.Contains(err.Error(), "--max-msg-size 1015808") {
		t.Fatalf("got %v", err)
	}
	cfg.MaxMsgSize = 992 << 10
	if _, err := js.UpdateStream(context.Background(), jetstream.StreamConfig(cfg)); err != nil {
		t.Fatal(err)
	}
	if err := checkTaskStream(context.Background(), js, names, 992<<10, nil); err != nil {
		t.Fatal(err)
	}
}
