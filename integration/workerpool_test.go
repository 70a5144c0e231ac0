package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// workerNode is a Python node on the worker protocol: it upper-cases its
// payload; "flaky" tasks take their process down on their first attempt;
// "bad" tasks fail for good.
const workerNode = `
import os, nodeq_worker
from nodeq_worker import NodeError

def handle(task):
    mode = task.params.get("mode")
    if mode == "flaky" and task.attempt == 1 and task.delivery == 1:
        os._exit(7)
    if mode == "bad":
        raise NodeError("Manifest", "bad task " + task.id)
    return task.payload.upper()

nodeq_worker.serve(handle)
`

// TestWorkerPoolNode: a worker node configured as an operator would, run
// by the consumer through a real nats-server: tasks succeed on a pool of
// Python processes, a task whose process crashes is retried on a new one
// and succeeds, a task that fails for good is dead-lettered; nothing is lost.
func TestWorkerPoolNode(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil && os.Getenv("CI") == "" {
		t.Skipf("python3 not found, so this test is skipped (CI installs python3 and requires it): %v", err)
	}
	if err != nil {
		t.Fatalf("python3 is required by this test (it runs sdk/python with a real interpreter): %v", err)
	}
	sdk, err := filepath.Abs(filepath.Join("..", "sdk", "python"))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "node.py")
	if err := os.WriteFile(script, []byte(workerNode), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("worker.yaml", fmt.Appendf(nil, `
nodes:
  upper:
    executor: worker
    command: [%q, %q]
    env: {PYTHONPATH: %q}
    pass_env: [PATH, HOME]
    timeout: 20s
    pool_size: 2
    max_tasks_per_process: 10
`, python, script, sdk))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg, err := cfg.Registry()
	if err != nil {
		t.Fatal(err)
	}
	// The registry is the test's: make sure its processes are gone once
	// the consumer has stopped (Close is idempotent).
	node, _ := reg.Lookup("upper")
	pool, ok := node.Executor.(io.Closer)
	if !ok {
		t.Fatalf("worker node's executor %T has no Close", node.Executor)
	}
	t.Cleanup(func() { _ = pool.Close() })
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	e.start(reg, runnerOpts{workers: 4, retry: resilience.Fixed(10*time.Millisecond, 3)})

	var ids []string
	for i := range 30 {
		id := fmt.Sprintf("ok-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "upper", ReplyTo: "results." + id, Payload: []byte("hi")})
	}
	e.publish(&task.Envelope{ID: "flaky-1", NodeType: "upper", ReplyTo: "results.flaky-1", Params: task.Params{"mode": "flaky"}})
	e.publish(&task.Envelope{ID: "bad-1", NodeType: "upper", ReplyTo: "results.bad-1", Params: task.Params{"mode": "bad"}})
	ids = append(ids, "flaky-1", "bad-1")

	eventually(t, 60*time.Second, "every task succeeded or dead-lettered", func() bool {
		n, _, _ := res.count()
		return n == len(ids)-1 && len(e.records()) == 1
	})
	recs := e.records()
	if r := recs[0].rec; r.TaskID != "bad-1" || !strings.Contains(r.Error, "bad task bad-1") || r.ErrorKind != resilience.Manifest.String() {
		t.Errorf("dead letter %s: kind %q, error %q; want bad-1, Manifest, the node's message", r.TaskID, r.ErrorKind, r.Error)
	}
	lost, _ := res.account(t, e, ids)
	if lost != 0 {
		t.Fatalf("lost %d tasks", lost)
	}
}
