//go:build unix

package executor

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// TestWorkerTimeoutKillsProcessGroup: a task past its timeout kills its
// process and the child it started; the next task gets a new process.
func TestWorkerTimeoutKillsProcessGroup(t *testing.T) {
	childPID := filepath.Join(t.TempDir(), "child.pid")
	w := pyWorker(t, `
import os, subprocess, time, nodeq_worker

def handle(task):
    if task.params.get("mode") == "hang":
        child = subprocess.Popen(["sleep", "3600"])
        with open(`+strconv.Quote(childPID)+`, "w") as f:
            f.write(str(child.pid))
        time.sleep(3600)
    return str(os.getpid())

nodeq_worker.serve(handle)
`, func(c *WorkerConfig) { c.RestartBackoff = time.Millisecond })
	pid1, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "a", NodeType: "n"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = runOn(t, w, 2*time.Second, &task.Envelope{ID: "slow", NodeType: "n", Params: task.Params{"mode": "hang"}})
	wantKind(t, err, resilience.Execution, "process group killed")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the timed-out task returned after %v", took)
	}
	data, err := os.ReadFile(childPID)
	if err != nil {
		t.Fatalf("the node did not start its child: %v", err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	pid2, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "b", NodeType: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if string(pid1) == string(pid2) {
		t.Errorf("the same process %s ran after the timeout", pid1)
	}
	// The new process started after the old one had exited and its group was killed.
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the timed-out node's child %d is still there (kill 0: %v)", child, err)
	}
}
