package executor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// python3 returns the interpreter the worker tests run. In CI they do not
// skip: the Python helper is part of what CI tests.
// It is the interpreter itself (sys.executable), not a version manager's
// shim on PATH, which would add its own start-up to every process run.
func python3(t testing.TB) string {
	t.Helper()
	p, err := findPython3()
	if err != nil && os.Getenv("CI") == "" {
		// README's test command works with only Go: without python3 these
		// tests are skipped there, never in CI (.ci/run sets CI and
		// installs python3), where they fail instead.
		t.Skipf("python3 not found, so the worker tests that run sdk/python are skipped (CI installs python3 and requires them): %v", err)
	}
	if err != nil {
		t.Fatalf("python3 is required by the worker tests (they run sdk/python with a real interpreter); install Python 3.8 or later: %v", err)
	}
	return p
}

var findPython3 = sync.OnceValues(func() (string, error) {
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
	if exe := strings.TrimSpace(string(out)); err == nil && exe != "" {
		return exe, nil
	}
	return p, nil
})

// sdkDir is sdk/python, absolute.
func sdkDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "sdk", "python"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// pyWorker returns a pool running script (Python source, written to a file).
func pyWorker(t testing.TB, script string, mod ...func(*WorkerConfig)) *WorkerPool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.py")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	return pyCommand(t, []string{python3(t), path}, mod...)
}

func pyCommand(t testing.TB, command []string, mod ...func(*WorkerConfig)) *WorkerPool {
	t.Helper()
	cfg := WorkerConfig{Command: command, Env: map[string]string{"PYTHONPATH": sdkDir(t)}, PassEnv: []string{"PATH"},
		KillGrace: 200 * time.Millisecond, PoolSize: 1, Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mod {
		m(&cfg)
	}
	w, err := Worker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// pidNode answers with its process ID, or as params.mode says.
const pidNode = `
import os, sys, time, nodeq_worker
from nodeq_worker import NodeError

def handle(task):
    mode = task.params.get("mode")
    if mode == "crash":
        sys.stderr.write("about to crash\n"); sys.stderr.flush()
        os._exit(3)
    if mode == "hang":
        time.sleep(3600)
    return str(os.getpid())

nodeq_worker.serve(handle)
`

func runOn(t testing.TB, w Executor, timeout time.Duration, env *task.Envelope) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return w.Execute(ctx, env)
}

func wantKind(t *testing.T, err error, kind resilience.Kind, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v containing %q", kind, contains)
	}
	if k := resilience.KindOf(err); k != kind || !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %v (kind %v); want kind %v containing %q", err, k, kind, contains)
	}
}

func TestWorkerRunsExampleNode(t *testing.T) {
	w := pyCommand(t, []string{python3(t), filepath.Join(sdkDir(t), "examples", "upper_node.py")}, func(c *WorkerConfig) { c.PoolSize = 2 })
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			id := "t" + strconv.Itoa(i)
			out, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: id, NodeType: "upper", Payload: []byte("hi " + id), Params: task.Params{"suffix": "!"}})
			if err != nil || string(out) != strings.ToUpper("hi "+id)+"!" {
				t.Errorf("task %s: %q, %v", id, out, err)
			}
		})
	}
	wg.Wait()
	if n := w.Starts(); n < 1 || n > 2 {
		t.Errorf("%d processes started for 20 tasks with pool_size 2; want 1 or 2", n)
	}
}

func TestWorkerErrorKinds(t *testing.T) {
	w := pyCommand(t, []string{python3(t), filepath.Join(sdkDir(t), "examples", "upper_node.py")})
	for _, c := range []struct {
		fail     string
		kind     resilience.Kind
		contains string
	}{
		{"transport", resilience.Transport, "upstream refused"},
		{"manifest", resilience.Manifest, "param fail=manifest"},
		{"raise", resilience.PythonVm, "ValueError: bad value"},
	} {
		_, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "e-" + c.fail, NodeType: "upper", Params: task.Params{"fail": c.fail}})
		wantKind(t, err, c.kind, c.contains)
	}
	if out, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "ok", NodeType: "upper", Payload: []byte("x")}); err != nil || string(out) != "X" {
		t.Fatalf("after the errors: %q, %v", out, err)
	}
	if n := w.Starts(); n != 1 {
		t.Errorf("%d processes started; want 1: a node's error does not cost its process", n)
	}
}

func TestWorkerCrashMidTaskIsTransientAndRestarts(t *testing.T) {
	w := pyWorker(t, pidNode, func(c *WorkerConfig) { c.RestartBackoff = time.Millisecond })
	pid1, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "a", NodeType: "n"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runOn(t, w, 20*time.Second, &task.Envelope{ID: "b", NodeType: "n", Params: task.Params{"mode": "crash"}})
	wantKind(t, err, resilience.PythonVm, "exit status 3")
	if !resilience.Retryable(err) || !strings.Contains(err.Error(), "about to crash") {
		t.Errorf("crash error %v: want retryable, with the last stderr line", err)
	}
	pid2, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "c", NodeType: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(pid1, pid2) || w.Starts() != 2 {
		t.Errorf("pids %s then %s, %d starts; want a new process", pid1, pid2, w.Starts())
	}
}

func TestWorkerRecyclesAfterMaxTasks(t *testing.T) {
	w := pyWorker(t, pidNode, func(c *WorkerConfig) { c.MaxTasksPerProcess = 3 })
	var pids []string
	for i := range 7 {
		out, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "r" + strconv.Itoa(i), NodeType: "n"})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, string(out))
	}
	if pids[0] != pids[2] || pids[2] == pids[3] || pids[3] != pids[5] || pids[5] == pids[6] {
		t.Errorf("pids %v: want a new process every 3 tasks", pids)
	}
}

func TestWorkerStartupFailureBacksOffAndFailsTasks(t *testing.T) {
	w := pyCommand(t, []string{python3(t), "-c", "import sys; sys.stderr.write('ImportError: no module named numpy\\n'); sys.exit(1)"},
		func(c *WorkerConfig) { c.RestartBackoff = time.Hour })
	_, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "s1", NodeType: "n"})
	wantKind(t, err, resilience.PythonVm, "before its ready message")
	if !strings.Contains(err.Error(), "no module named numpy") {
		t.Errorf("error %v does not show the process's last stderr line", err)
	}
	for i := range 5 {
		_, err := runOn(t, w, 5*time.Second, &task.Envelope{ID: "s" + strconv.Itoa(i+2), NodeType: "n"})
		wantKind(t, err, resilience.PythonVm, "not restarted: 1 process failures in a row")
	}
	if n := w.Starts(); n != 1 {
		t.Errorf("%d starts; want 1: the backoff holds the restarts", n)
	}
}

func TestWorkerStartupBackoffGrows(t *testing.T) {
	w := pyCommand(t, []string{python3(t), "-c", "raise SystemExit(2)"}, func(c *WorkerConfig) {
		c.RestartBackoff, c.MaxRestartBackoff = 20*time.Millisecond, 80*time.Millisecond
	})
	for i := range 4 {
		_, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "g" + strconv.Itoa(i), NodeType: "n"})
		wantKind(t, err, resilience.PythonVm, "exit status 2")
	}
	w.mu.Lock()
	failures, backoff := w.failures, time.Until(w.retryAt)
	w.mu.Unlock()
	if failures != 4 || backoff > 80*time.Millisecond {
		t.Errorf("%d failures in a row, next start in %v; want 4, at most the 80ms cap", failures, backoff)
	}
}

func TestWorkerStartupTimeout(t *testing.T) {
	w := pyCommand(t, []string{python3(t), "-c", "import time; time.sleep(3600)"}, func(c *WorkerConfig) { c.StartupTimeout = 300 * time.Millisecond })
	_, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "st", NodeType: "n"})
	wantKind(t, err, resilience.PythonVm, "no ready message within the startup timeout of 300ms")
}

// rawNode speaks the protocol by hand, badly when params.mode says so.
const rawNode = `
import base64, json, os, sys
out = sys.stdout.buffer
out.write(b'{"type":"ready","protocol":1,"runtime":"python"}\n'); out.flush()
for line in sys.stdin.buffer:
    m = json.loads(line)
    mode = m["params"].get("mode")
    if mode == "garbage":
        out.write(b"hello from print()\n")
    elif mode == "wrongid":
        out.write(json.dumps({"type": "result", "id": "someone-else", "output": ""}).encode() + b"\n")
    elif mode == "huge":
        out.write(b'{"type":"result","id":"' + m["id"].encode() + b'","output":"' + b"A" * 400000 + b'"}\n')
    elif mode == "big":
        out.write(json.dumps({"type": "result", "id": m["id"], "output": base64.b64encode(b"x" * 2048).decode()}).encode() + b"\n")
    elif mode == "badkind":
        out.write(json.dumps({"type": "error", "id": m["id"], "kind": "Nonsense\n\x00", "message": "m"}).encode() + b"\n")
    else:
        out.write(json.dumps({"type": "result", "id": m["id"], "output": base64.b64encode(str(os.getpid()).encode()).decode()}).encode() + b"\n")
    out.flush()
`

func TestWorkerHostileOutput(t *testing.T) {
	w := pyWorker(t, rawNode, func(c *WorkerConfig) { c.MaxOutput = 1024; c.RestartBackoff = time.Millisecond })
	for _, c := range []struct {
		mode     string
		kind     resilience.Kind
		contains string
		restarts bool
	}{
		{"garbage", resilience.PythonVm, `not a JSON message: "hello from print()"`, true},
		{"wrongid", resilience.PythonVm, `answered task "someone-else" while running task "t-wrongid"`, true},
		{"huge", resilience.PythonVm, "stdout line over", true},
		{"big", resilience.Serialization, "output exceeds 1024 bytes", false},
		{"badkind", resilience.Other, `reported unknown error kind "Nonsense\n\x00"`, false},
	} {
		before := w.Starts()
		_, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "t-" + c.mode, NodeType: "n", Params: task.Params{"mode": c.mode}})
		wantKind(t, err, c.kind, c.contains)
		if out, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "after-" + c.mode, NodeType: "n"}); err != nil || len(out) == 0 {
			t.Fatalf("after %s: %q, %v", c.mode, out, err)
		}
		if restarted := w.Starts() > before; restarted != c.restarts {
			t.Errorf("%s: restarted %v; want %v", c.mode, restarted, c.restarts)
		}
	}
}

// syncBuffer is a log destination tests read while the pool writes.
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

func TestWorkerStderrIsAttributedToTheTask(t *testing.T) {
	var logs syncBuffer
	w := pyCommand(t, []string{python3(t), filepath.Join(sdkDir(t), "examples", "upper_node.py")}, func(c *WorkerConfig) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	ctx, cancel := context.WithTimeout(WithAttempt(context.Background(), Attempt{Number: 2, Delivery: 1}), 20*time.Second)
	defer cancel()
	if _, err := w.Execute(ctx, &task.Envelope{ID: "logged-1", NodeType: "upper", Payload: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close() // the stderr line is read by the time the process is gone
	var found bool
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, "upper-casing 3 bytes (attempt 2)") {
			found = strings.Contains(line, `"task_id":"logged-1"`) && strings.Contains(line, `"node_type":"upper"`) && strings.Contains(line, `"attempt":2`)
			if !found {
				t.Errorf("stderr line not attributed to the task: %s", line)
			}
		}
	}
	if !found {
		t.Errorf("the node's print is not in the log:\n%s", logs.String())
	}
}

func TestWorkerConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  WorkerConfig
		want string
	}{
		{WorkerConfig{}, "command is empty"},
		{WorkerConfig{Command: []string{"/no/such/program"}}, "/no/such/program"},
		{WorkerConfig{Command: []string{"/bin/sh"}, PoolSize: 65}, "pool_size 65: want 1 to 64"},
		{WorkerConfig{Command: []string{"/bin/sh"}, MaxTasksPerProcess: -1}, "max_tasks_per_process"},
		{WorkerConfig{Command: []string{"/bin/sh"}, Env: map[string]string{"A=B": "c"}}, `env: "A=B" is not a variable name`},
	} {
		if _, err := Worker(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Worker(%+v) = %v; want an error containing %q", c.cfg, err, c.want)
		}
	}
}

func TestWorkerClosedPoolFailsTasks(t *testing.T) {
	w := pyWorker(t, pidNode)
	if _, err := runOn(t, w, 20*time.Second, &task.Envelope{ID: "c1", NodeType: "n"}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	_, err := runOn(t, w, time.Second, &task.Envelope{ID: "c2", NodeType: "n"})
	wantKind(t, err, resilience.Execution, "worker pool closed")
}

func TestReadLine(t *testing.T) {
	for _, c := range []struct {
		in      string
		limit   int
		want    []string
		wantErr error
	}{
		{"a\nbb\n", 10, []string{"a", "bb"}, io.EOF},
		{"", 10, nil, io.EOF},
		{"abc", 10, nil, io.ErrUnexpectedEOF},
		{strings.Repeat("x", 11) + "\n", 10, nil, errLineTooLong},
		{strings.Repeat("x", 10) + "\n", 10, []string{strings.Repeat("x", 10)}, io.EOF},
		{strings.Repeat("y", 100) + "\n", 10, nil, errLineTooLong},
	} {
		br := bufio.NewReaderSize(strings.NewReader(c.in), 16)
		var got []string
		var err error
		for {
			var line []byte
			if line, err = readLine(br, c.limit); err != nil {
				break
			}
			got = append(got, string(line))
		}
		if !errors.Is(err, c.wantErr) || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("readLine(%.20q, %d): %q, %v; want %q, %v", c.in, c.limit, got, err, c.want, c.wantErr)
		}
	}
}

func TestParseMessage(t *testing.T) {
	for _, line := range []string{``, `null`, `[]`, `{"type":"task"}`, `{"type":"result"`, "\x00\x01", `{"type":"` + strings.Repeat("z", 200) + `"}`} {
		if _, err := parseMessage([]byte(line)); err == nil {
			t.Errorf("parseMessage(%q) accepted", line)
		}
	}
	if err := checkReady(workerMessage{Type: msgReady, Protocol: 2}); err == nil || !strings.Contains(err.Error(), "speaks protocol 2") {
		t.Errorf("protocol 2: %v", err)
	}
	if _, _, v := outcome(workerMessage{Type: msgReady, ID: "x"}, "x", 10, resilience.Execution); v == nil {
		t.Error("a ready message in answer to a task was accepted")
	}
	if _, _, v := outcome(workerMessage{Type: msgResult, ID: "x", Output: "!!"}, "x", 10, resilience.Execution); v == nil {
		t.Error("output that is not base64 was accepted")
	}
	_, err, _ := outcome(workerMessage{Type: msgError, ID: "x", Message: strings.Repeat("m", 10000)}, "x", 10, resilience.PythonVm)
	if resilience.KindOf(err) != resilience.PythonVm || len(err.Error()) > maxErrorMessage+10 {
		t.Errorf("an error without a kind: %v (kind %v, %d bytes); want the runtime's kind, cut", err, resilience.KindOf(err), len(err.Error()))
	}
}

func TestEncodeRequest(t *testing.T) {
	line, err := encodeRequest(&task.Envelope{ID: "i", NodeType: "n", Payload: []byte("a\nb\x00")}, Attempt{}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"task","id":"i","node_type":"n","params":{},"payload":"YQpiAA==","payload_encoding":"bytes","attempt":1,"delivery":1,"deadline":"2026-01-02T03:04:05Z"}` + "\n"
	if string(line) != want {
		t.Errorf("request line\n%s\nwant\n%s", line, want)
	}
}
