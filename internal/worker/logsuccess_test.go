package worker

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// lockedBuffer is a log sink safe for the worker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// log.task_success: a succeeded task is logged at info when set, and only
// at debug otherwise; a log at info level then shows no line per success.
func TestLogSuccess(t *testing.T) {
	for _, c := range []struct {
		name       string
		logSuccess bool
		want       bool
	}{
		{"off: no line at info", false, false},
		{"on: one line at info", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs lockedBuffer
			w := New(Options{Registry: nodes(func() error { return nil }), Retry: resilience.None(), LogSuccess: c.logSuccess,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
			msg := newFakeMsg(t, &task.Envelope{ID: "t1", NodeType: "n"}, 1)
			w.Handle(context.Background(), queue.Delivery{Msg: msg})
			if got := msg.settlement(); len(got) != 1 || got[0] != "ack" {
				t.Fatalf("settled %v, want [ack]", got)
			}
			line := strings.Contains(logs.String(), `level=INFO msg="task succeeded"`)
			if line != c.want || c.want && !strings.Contains(logs.String(), "task_id=t1") {
				t.Fatalf("log.task_success %v: a success line at info %v, want %v:\n%s", c.logSuccess, line, c.want, logs.String())
			}
		})
	}
}
