package executor

import (
	"context"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/task"
)

// A worker that answers before it has read its whole request, then stops
// reading: the task still ends with its deadline (the process is killed),
// so a shutdown cannot hang on it.
const answersEarlyNode = `
import os, sys, time
sys.stdout.buffer.write(b'{"type":"ready","protocol":1}\n'); sys.stdout.flush()
head = os.read(0, 100)
i = head.index(b'"id":"') + 6
tid = head[i:head.index(b'"', i)]
sys.stdout.buffer.write(b'{"type":"result","id":"' + tid + b'","output":""}\n'); sys.stdout.flush()
time.sleep(3600)
`

func TestWorkerAnswerBeforeReadingEndsWithTheDeadline(t *testing.T) {
	w := pyWorker(t, answersEarlyNode)
	done := make(chan error, 1)
	go func() {
		_, err := runOn(t, w, 2*time.Second, &task.Envelope{ID: "t1", NodeType: "x", Payload: make([]byte, 1<<20)})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a task whose request was never read succeeded")
		}
		t.Logf("ended: %v", err)
	case <-time.After(60 * time.Second): // a hang, not a timing target: the deadline is 2s
		t.Fatal("Execute ignores its 2s deadline: still blocked after 60s")
	}
}

// Close does not wait out a process's start-up (here minutes): it stops
// the process that is starting.
const slowStartNode = `
import time, nodeq_worker
time.sleep(3600)
nodeq_worker.serve(lambda t: b"")
`

func TestWorkerCloseDuringSlowStart(t *testing.T) {
	w := pyWorker(t, slowStartNode, func(c *WorkerConfig) { c.StartupTimeout = 10 * time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := w.Execute(ctx, &task.Envelope{ID: "t1", NodeType: "x"}); err == nil {
		t.Fatal("a task ran on a process that never became ready")
	}
	closed := make(chan struct{})
	go func() { _ = w.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(60 * time.Second): // a hang, not a timing target
		t.Fatal("Close still blocked after 60s: it waits for the 10m start-up timeout")
	}
}
