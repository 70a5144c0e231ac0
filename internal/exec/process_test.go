package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

func sh(t *testing.T, script string, mod ...func(*ProcessConfig)) Executor {
	t.Helper()
	cfg := ProcessConfig{Command: []string{"/bin/sh", "-c", script}, PassEnv: []string{"PATH"}, KillGrace: 100 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	ex, err := Process(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func run(t *testing.T, ex Executor, timeout time.Duration, payload string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return ex.Execute(ctx, &task.Envelope{ID: "t-9", NodeID: "n-1", NodeType: "proc", Payload: []byte(payload), Params: task.Params{"k": "v"}})
}

func TestProcessSuccess(t *testing.T) {
	ex := sh(t, `tr a-z A-Z; printf ' %s %s %s' "$NODEQ_TASK_ID" "$NODEQ_PARAMS" "$SECRET_FROM_PARENT"`)
	t.Setenv("SECRET_FROM_PARENT", "leaked")
	out, err := run(t, ex, 5*time.Second, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != `HELLO t-9 {"k":"v"} ` {
		t.Fatalf("output %q (the parent's environment must not leak into the child)", got)
	}
}

func TestProcessExitCodes(t *testing.T) {
	cases := []struct {
		script string
		kind   resilience.Kind
		msg    string
	}{
		{"echo tempfail >&2; exit 75", resilience.Execution, "exit status 75: tempfail"},
		{"exit 74", resilience.Io, "exit status 74"},
		{"exit 69", resilience.Transport, "exit status 69"},
		{"exit 65", resilience.Marshaling, "exit status 65"},
		{"exit 64", resilience.Manifest, "exit status 64"},
		{"exit 78", resilience.Manifest, "exit status 78"},
		{"echo boom >&2; exit 1", resilience.Other, "exit status 1: boom"},
		{"echo 'nodeq-error: Transport: upstream refused' >&2; echo later >&2; exit 1", resilience.Transport, "upstream refused"},
		{"echo 'nodeq-error: Bogus: what' >&2; exit 75", resilience.Other, "unknown error kind"},
		{"kill -9 $$", resilience.Execution, "signal: killed"},
	}
	for _, c := range cases {
		t.Run(c.script, func(t *testing.T) {
			_, err := run(t, sh(t, c.script), 5*time.Second, "")
			if err == nil {
				t.Fatal("want an error")
			}
			if k := resilience.KindOf(err); k != c.kind {
				t.Fatalf("kind %v, want %v (%v)", k, c.kind, err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not contain %q", err, c.msg)
			}
		})
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3 is the state; a zombie (Z) has already died.
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}

func TestProcessTimeoutKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The grandchild ignores SIGTERM, so only the group SIGKILL stops it.
	ex := sh(t, `sh -c 'trap "" TERM; sleep 30' & echo $! > `+pidFile+`; wait`)
	start := time.Now()
	_, err := run(t, ex, 300*time.Millisecond, "")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || resilience.KindOf(err) != resilience.Execution {
		t.Fatalf("want a transient deadline error, got %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout took %v", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(3 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) {
		t.Fatalf("grandchild %d survived the timeout", pid)
	}
}

func TestProcessOutputCap(t *testing.T) {
	ex := sh(t, `head -c 5000 /dev/zero`, func(c *ProcessConfig) { c.MaxOutput = 1000 })
	_, err := run(t, ex, 5*time.Second, "")
	if resilience.KindOf(err) != resilience.Serialization || !strings.Contains(err.Error(), "exceeds 1000 bytes") {
		t.Fatalf("got %v", err)
	}
}

func TestProcessConfigErrors(t *testing.T) {
	if _, err := Process(ProcessConfig{}); err == nil {
		t.Fatal("empty command accepted")
	}
	if _, err := Process(ProcessConfig{Command: []string{"/no/such/binary"}}); err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("missing binary: %v", err)
	}
}
