package executor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
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

// script writes a shell script to the test's directory and returns an
// executor that runs it with /bin/sh.
func script(t *testing.T, body string, mod ...func(*ProcessConfig)) Executor {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.sh")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := ProcessConfig{Command: []string{"/bin/sh", path}, PassEnv: []string{"PATH"}, KillGrace: 100 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	ex, err := Process(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// readPid reads a pid a node wrote to file.
func readPid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the node did not record its grandchild: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("bad pid %q in %s", b, file)
	}
	t.Cleanup(func() { killSleep(pid) })
	return pid
}

// killSleep kills process pid if it is still a sleep left by a failed test.
func killSleep(pid int) {
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if alive(pid) && strings.HasPrefix(string(cmdline), "sleep\x00") {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// waitGone fails the test unless process pid is dead (or a zombie) within a
// second; a leftover is killed at the end of the run, so this is a margin.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		t.Fatalf("process %d, left behind by the run, is still alive", pid)
	}
}

// statFields returns the fields of /proc/<pid>/stat after the command name:
// state, ppid, pgrp, session, ...
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// zombieChildren lists this process's children that have exited and not
// been reaped.
func zombieChildren() []int { return children(true) }

// children lists this process's children, zombies or live ones.
func children(zombies bool) []int {
	var zs []int
	entries, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 && f[1] == self && (f[0] == "Z") == zombies {
			zs = append(zs, pid)
		}
	}
	return zs
}

func assertNoZombies(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return
	}
	if zs := zombieChildren(); len(zs) > 0 {
		t.Fatalf("zombies left reparented to the test process: %v", zs)
	}
}

// A grandchild left running by a command that exits is killed at the end
// of the run, whatever the exit status; the run does not wait for it,
// though it holds stdout open.
func TestProcessLeftoversKilledAfterRun(t *testing.T) {
	for _, c := range []struct {
		exit string
		ok   bool
	}{{"exit 0", true}, {"exit 1", false}} {
		t.Run(c.exit, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
			ex := script(t, "sleep 300 &\necho $! > "+pidFile+"\necho done\n"+c.exit+"\n")
			start := time.Now()
			out, err := run(t, ex, 10*time.Second, "")
			took := time.Since(start)
			pid := readPid(t, pidFile)
			if c.ok && (err != nil || string(out) != "done\n") {
				t.Fatalf("got %q, %v; want done", out, err)
			}
			if !c.ok && (err == nil || resilience.KindOf(err) != resilience.Other || !strings.Contains(err.Error(), "exit status 1")) {
				t.Fatalf("got %v, want exit status 1 (Other)", err)
			}
			waitGone(t, pid)
			if took >= pipeDrainDelay {
				t.Fatalf("the run took %v: it waited for the grandchild", took)
			}
			assertNoZombies(t)
		})
	}
}

// A grandchild that leaves the process group with setsid is killed too, on
// Linux: after a run that succeeds, and after a timeout.
func TestProcessSetsidEscapeeKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux brings back processes that left the group (child subreaper)")
	}
	for _, c := range []struct {
		name, end string
		timeout   time.Duration
	}{{"success", "echo ok", 10 * time.Second}, {"timeout", "sleep 300", 600 * time.Millisecond}} {
		t.Run(c.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "escapee.pid")
			// The node checks that its grandchild really left its process
			// group and session (exit 64 otherwise).
			ex := script(t, `setsid sh -c 'echo $$ > `+pidFile+`; exec sleep 300' &
while [ ! -s `+pidFile+` ]; do sleep 0.01; done
p=$(cat `+pidFile+`)
set -- $(sed 's/.*) //' /proc/$p/stat)
[ "$4" = "$p" ] && [ "$3" = "$p" ] || { echo "nodeq-error: Manifest: grandchild did not leave the group: $*" >&2; exit 64; }
`+c.end+"\n")
			start := time.Now()
			out, err := run(t, ex, c.timeout, "")
			took := time.Since(start)
			pid := readPid(t, pidFile)
			timedOut := c.name == "timeout"
			if !timedOut && (err != nil || string(out) != "ok\n") {
				t.Fatalf("got %q, %v; want ok", out, err)
			}
			if timedOut && (!errors.Is(err, context.DeadlineExceeded) || resilience.KindOf(err) != resilience.Execution) {
				t.Fatalf("want a transient deadline error, got %v", err)
			}
			waitGone(t, pid)
			// Not held up by the escapee's grip on stdout.
			limit := pipeDrainDelay * 8 / 10
			if timedOut {
				limit += c.timeout
			}
			if took > limit {
				t.Fatalf("the run took %v, more than %v", took, limit)
			}
			assertNoZombies(t)
		})
	}
}

// Orphans that exit on their own, in the group or out of it, become the
// consumer's zombies (it is their subreaper); the run's cleanup reaps them.
func TestProcessReapsOrphans(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux makes the consumer a child subreaper")
	}
	dir := t.TempDir()
	// Each orphan waits (up to 2s) until it has been reparented to the test
	// process, records its stat line, and exits.
	self := strconv.Itoa(os.Getpid())
	orphan := `i=0; while [ "$(sed "s/.*) //" /proc/$$/stat | cut -d" " -f2)" != ` + self +
		` ] && [ $i -lt 200 ]; do i=$((i+1)); sleep 0.01; done; sed "s/.*) //" /proc/$$/stat > `
	ex := script(t, `(sh -c '`+orphan+dir+`/in-group' &)
(setsid sh -c '`+orphan+dir+`/escaped' &)
while [ ! -s `+dir+`/in-group ] || [ ! -s `+dir+`/escaped ]; do sleep 0.01; done
sleep 0.1
`)
	if _, err := run(t, ex, 5*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	// Both orphans were reparented to this process before they exited.
	for _, name := range []string{"in-group", "escaped"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if f := strings.Fields(string(b)); len(f) < 2 || f[1] != self {
			t.Fatalf("%s orphan's parent was not the test process: %q", name, b)
		}
	}
	assertNoZombies(t)
}

// Concurrent runs that leave processes behind do not disturb one another:
// a sweep never reaps a command that os/exec is still to wait for.
func TestProcessConcurrentRunsWithLeftovers(t *testing.T) {
	dir := t.TempDir()
	ex := script(t, `case $NODEQ_TASK_ID in
*0) (sleep 300 & echo $! > `+dir+`/$NODEQ_TASK_ID) ;;
*1) (setsid sh -c 'echo $$ > `+dir+`/$NODEQ_TASK_ID; exec sleep 300' &) ;;
*2) (true &) ;;
esac
echo "$NODEQ_TASK_ID"
`)
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				killSleep(pid)
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			for i := range 8 {
				id := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := ex.Execute(ctx, &task.Envelope{ID: id, NodeType: "proc"})
				cancel()
				if err == nil && string(out) != id+"\n" {
					err = fmt.Errorf("output %q", out)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assertNoZombies(t)
	if runtime.GOOS == "linux" {
		if left := children(false); len(left) > 0 {
			t.Fatalf("processes left behind, reparented to the test process: %v", left)
		}
	}
}

// A task value that an environment variable cannot carry fails the task
// permanently (Manifest), naming the variable: as a start failure it would
// count as this machine's transient fault.
func TestProcessEnvironmentLimits(t *testing.T) {
	ex := sh(t, `printf '%s' "$NODEQ_PARAMS" | wc -c`)
	// Exactly at the limit: NODEQ_PARAMS={"s":"..."} is maxEnvVar bytes.
	atLimit := strings.Repeat("x", maxEnvVar-len(`NODEQ_PARAMS={"s":""}`))
	cases := []struct {
		name string
		env  task.Envelope
		msg  []string // empty: must succeed
	}{
		{"params at the limit", task.Envelope{ID: "t", Params: task.Params{"s": atLimit}}, nil},
		{"params over the limit", task.Envelope{ID: "t", Params: task.Params{"s": atLimit + "x"}},
			[]string{"NODEQ_PARAMS", "the params as JSON", strconv.Itoa(maxEnvVar + 1), strconv.Itoa(maxEnvVar)}},
		{"huge params", task.Envelope{ID: "t", Params: task.Params{"s": strings.Repeat("y", 200<<10)}},
			[]string{"NODEQ_PARAMS", "over the limit"}},
		{"params not JSON", task.Envelope{ID: "t", Params: task.Params{"f": math.NaN()}}, []string{"NODEQ_PARAMS", "JSON"}},
		{"NUL in task ID", task.Envelope{ID: "t\x00x"}, []string{"NODEQ_TASK_ID", "NUL byte at offset 1"}},
		{"NUL in correlation ID", task.Envelope{ID: "t", CorrelationID: "\x00"}, []string{"NODEQ_CORRELATION_ID", "NUL"}},
		{"huge node ID", task.Envelope{ID: "t", NodeID: strings.Repeat("n", 130<<10)}, []string{"NODEQ_NODE_ID", "over the limit"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.env.NodeType = "proc"
			out, err := ex.Execute(context.Background(), &c.env)
			if len(c.msg) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if want := strconv.Itoa(maxEnvVar - len("NODEQ_PARAMS=")); strings.TrimSpace(string(out)) != want {
					t.Fatalf("the child saw %s bytes of params, want %s", out, want)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			if resilience.Retryable(err) || resilience.KindOf(err) != resilience.Manifest {
				t.Fatalf("want a permanent Manifest error, got %v (kind %v)", err, resilience.KindOf(err))
			}
			for _, m := range c.msg {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not say %q", err, m)
				}
			}
		})
	}
}

// The total size of arguments and environment is limited too (on Linux, a
// quarter of the stack size limit, at least 128 KiB): a task whose values
// are each allowed but together too big fails permanently. The test runs
// itself again under "ulimit -s 512", which makes the limit 128 KiB.
func TestProcessArgSpace(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the total is checked on Linux only")
	}
	if os.Getenv("NODEQ_TEST_ARG_SPACE") != "1" {
		cmd := osexec.Command("/bin/sh", "-c", `ulimit -s 512 && exec "$0" -test.run='^TestProcessArgSpace$' -test.v`, os.Args[0])
		// atexit_sleep_ms: a race-enabled binary otherwise sleeps 1s at exit.
		cmd.Env = append(os.Environ(), "NODEQ_TEST_ARG_SPACE=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestProcessArgSpace") {
			t.Fatalf("under ulimit -s 512: %v\n%s", err, out)
		}
		return
	}
	ex := sh(t, `echo ok`)
	if out, err := run(t, ex, 5*time.Second, ""); err != nil || string(out) != "ok\n" {
		t.Fatalf("a small task: %q, %v", out, err)
	}
	big := strings.Repeat("z", 100<<10)
	_, err := ex.Execute(context.Background(), &task.Envelope{ID: "t", NodeType: "proc", CorrelationID: big, Params: task.Params{"s": big}})
	if resilience.Retryable(err) || resilience.KindOf(err) != resilience.Manifest || !strings.Contains(err.Error(), "arguments and environment would take") {
		t.Fatalf("want a permanent Manifest error about the total, got %v", err)
	}
}

// A start failure that is not the task's doing stays transient (Io).
func TestProcessStartFailureIsTransient(t *testing.T) {
	ex := sh(t, `true`, func(c *ProcessConfig) { c.Dir = filepath.Join(t.TempDir(), "missing") })
	_, err := run(t, ex, 5*time.Second, "")
	if !resilience.Retryable(err) || resilience.KindOf(err) != resilience.Io {
		t.Fatalf("want a transient Io error, got %v", err)
	}
}

// The operator's variables are checked when the node is configured.
func TestProcessEnvConfig(t *testing.T) {
	for _, cfg := range []ProcessConfig{
		{Env: map[string]string{"A": "x\x00y"}},
		{Env: map[string]string{"A=B": "x"}},
		{Env: map[string]string{"A": strings.Repeat("v", maxEnvVar)}},
		{PassEnv: []string{""}},
	} {
		cfg.Command = []string{"/bin/sh"}
		if _, err := Process(cfg); err == nil {
			t.Errorf("accepted env %q, pass_env %q", cfg.Env, cfg.PassEnv)
		}
	}
}

// Every run has its own NODEQ_RUN_ID, which the operator's env cannot set.
func TestProcessRunID(t *testing.T) {
	ex := sh(t, `printf %s "$NODEQ_RUN_ID"`, func(c *ProcessConfig) { c.Env = map[string]string{RunIDEnv: "fixed"} })
	a, err1 := run(t, ex, 5*time.Second, "")
	b, err2 := run(t, ex, 5*time.Second, "")
	if err1 != nil || err2 != nil || len(a) < 16 || string(a) == string(b) || string(a) == "fixed" {
		t.Fatalf("run IDs %q, %q (%v, %v): want two different random IDs", a, b, err1, err2)
	}
}

// A process that leaves the group with an empty environment is out of
// reach (see docs/executors.md); the reaper looks at it for a few passes in
// case it is only in the middle of an execve, but once, not in every run.
func TestProcessUnmarkedEscapeeCostsOnce(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	pidFile := filepath.Join(t.TempDir(), "escapee.pid")
	if _, err := run(t, script(t, "env -i setsid sleep 300 >/dev/null 2>&1 &\necho $! > "+pidFile+"\nexec sleep 0.05\n"), 5*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	if env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); err != nil || len(env) != 0 || !alive(pid) {
		t.Fatalf("want a live escapee with an empty environment: %q, %v", env, err)
	}
	ex := sh(t, "true")
	fastest := time.Hour
	for range 3 {
		start := time.Now()
		if _, err := run(t, ex, 5*time.Second, ""); err != nil {
			t.Fatal(err)
		}
		fastest = min(fastest, time.Since(start))
	}
	if fastest > 150*time.Millisecond {
		t.Fatalf("runs after the escapee took at least %v each: the reaper keeps looking at it", fastest)
	}
}
