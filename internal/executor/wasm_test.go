package executor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// newWasm builds a wasm executor of the test module name, closed at the
// end of the test.
func newWasm(t *testing.T, name string, cfg WasmConfig) *WasmModule {
	t.Helper()
	if cfg.Module == "" {
		cfg.Module = wasmModulePath(t, name)
	}
	cfg.sharedCache = testCompilationCache
	w, err := Wasm(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

func runWasm(t *testing.T, w *WasmModule, timeout time.Duration, env *task.Envelope) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return w.Execute(ctx, env)
}

func params(p task.Params) *task.Envelope {
	return &task.Envelope{ID: "t1", NodeID: "n1", NodeType: "wasm", CorrelationID: "c1", Params: p}
}

// TestWasmEcho: the payload goes in on stdin and the output comes from
// stdout, in a fresh instance per task (several at once).
func TestWasmEcho(t *testing.T) {
	w := newWasm(t, "echo", WasmConfig{})
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			payload := []byte(strings.Repeat("payload ", i*1000) + "end")
			out, err := runWasm(t, w, 30*time.Second, &task.Envelope{ID: "t", Payload: payload})
			if err == nil && string(out) != string(payload) {
				err = errors.New("output differs from the payload")
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	out, err := runWasm(t, w, 30*time.Second, &task.Envelope{ID: "t"})
	if err != nil || len(out) != 0 {
		t.Fatalf("empty payload: %q %v", out, err)
	}
}

// TestWasmEnvironment: the module sees the NODEQ_* variables and the
// configured env, and nothing of the consumer's environment.
func TestWasmEnvironment(t *testing.T) {
	t.Setenv("NODEQ_WASM_HOST_SECRET", "must-not-leak")
	w := newWasm(t, "probe", WasmConfig{Env: map[string]string{"GREETING": "hello"}})
	out, err := runWasm(t, w, 30*time.Second, params(task.Params{"do": "env"}))
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	for _, want := range []string{"GREETING=hello\n", "NODEQ_TASK_ID=t1\n", "NODEQ_NODE_ID=n1\n", "NODEQ_NODE_TYPE=wasm\n",
		"NODEQ_CORRELATION_ID=c1\n", `NODEQ_PARAMS={"do":"env"}` + "\n", "NODEQ_PAYLOAD_ENCODING=", RunIDEnv + "="} {
		if !strings.Contains(got, want) {
			t.Errorf("environment lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "must-not-leak") || strings.Contains(got, "PATH=") {
		t.Errorf("the host's environment leaked:\n%s", got)
	}
	if _, err := runWasm(t, w, 30*time.Second, &task.Envelope{ID: "a\x00b"}); resilience.KindOf(err) != resilience.Manifest {
		t.Errorf("a NUL byte in the task ID: %v, want Manifest", err)
	}
}

// TestWasmExitStatusKinds: exit statuses and "nodeq-error:" lines map to
// kinds as for process.
func TestWasmExitStatusKinds(t *testing.T) {
	w := newWasm(t, "fail", WasmConfig{})
	for _, tc := range []struct {
		params task.Params
		want   resilience.Kind
		msg    string
	}{
		{task.Params{"exit": ExitTempFail}, resilience.Execution, "exit status 75: failing as asked"},
		{task.Params{"exit": ExitIOErr}, resilience.Io, "exit status 74"},
		{task.Params{"exit": ExitUnavailable}, resilience.Transport, "exit status 69"},
		{task.Params{"exit": ExitDataErr}, resilience.Marshaling, "exit status 65"},
		{task.Params{"exit": ExitUsage}, resilience.Manifest, "exit status 64"},
		{task.Params{"exit": ExitConfig}, resilience.Manifest, "exit status 78"},
		{task.Params{"exit": 1}, resilience.Other, "exit status 1"},
		{task.Params{"panic": true}, resilience.Other, "exit status 2"},
		{task.Params{"exit": 1, "report": "Transport: upstream refused"}, resilience.Transport, "wasm fail.wasm: upstream refused"},
		{task.Params{"exit": 75, "report": "Bogus: what"}, resilience.Other, `unknown error kind "Bogus"`},
	} {
		_, err := runWasm(t, w, 30*time.Second, params(tc.params))
		if resilience.KindOf(err) != tc.want || err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: %v (%v), want %v containing %q", tc.params, err, resilience.KindOf(err), tc.want, tc.msg)
		}
	}
	if out, err := runWasm(t, w, 30*time.Second, params(task.Params{"exit": 0})); err != nil || len(out) != 0 {
		t.Errorf("exit 0: %q %v", out, err)
	}
}

// TestWasmTimeoutStopsALoop: a module that loops without calling the host
// is stopped by the task's deadline (an Execution error, as a process
// killed on timeout), soon after it.
func TestWasmTimeoutStopsALoop(t *testing.T) {
	w := newWasm(t, "loop", WasmConfig{})
	start := time.Now()
	_, err := runWasm(t, w, 300*time.Millisecond, params(nil))
	if resilience.KindOf(err) != resilience.Execution || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want Execution wrapping the deadline", err)
	}
	t.Logf("loop stopped after %v (timeout 300ms)", time.Since(start))
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the loop ran %v past a 300ms timeout", took)
	}
}

// TestWasmMemoryLimit: a module allocating without bound is stopped by the
// memory limit and fails with Wasm; one declaring more initial memory than
// the limit fails at start-up.
func TestWasmMemoryLimit(t *testing.T) {
	w := newWasm(t, "alloc", WasmConfig{MemoryLimit: 32 << 20})
	_, err := runWasm(t, w, 60*time.Second, params(nil))
	if resilience.KindOf(err) != resilience.Wasm || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("got %v (%v), want a Wasm out-of-memory error", err, resilience.KindOf(err))
	}
	_, err = Wasm(context.Background(), WasmConfig{Module: writeWasm(t, "big", wasmBigMemory), MemoryLimit: 64 << 20})
	if err == nil {
		t.Fatal("a module declaring 128MiB compiled under a 64MiB limit")
	}
	t.Log(err)
}

// TestWasmTrap: a trap (unreachable) is a Wasm error.
func TestWasmTrap(t *testing.T) {
	w := newWasm(t, "trap", WasmConfig{Module: writeWasm(t, "trap", wasmTrap)})
	_, err := runWasm(t, w, 30*time.Second, params(nil))
	if resilience.KindOf(err) != resilience.Wasm || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("got %v (%v), want a Wasm trap", err, resilience.KindOf(err))
	}
}

// TestWasmFilesystem: by default nothing of the host's filesystem is
// visible; a mount is readable and not writable.
func TestWasmFilesystem(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.txt"), []byte("weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	sandboxed := newWasm(t, "probe", WasmConfig{})
	for _, p := range []task.Params{{"do": "read", "path": "/etc/passwd"}, {"do": "read", "path": filepath.Join(dir, "model.txt")}, {"do": "write", "path": "/tmp/x"}} {
		if out, err := runWasm(t, sandboxed, 30*time.Second, params(p)); resilience.KindOf(err) != resilience.Io {
			t.Errorf("%v without mounts: %q %v, want exit 74 (Io)", p, out, err)
		}
	}
	mounted := newWasm(t, "probe", WasmConfig{Mounts: []WasmMount{{Host: dir, Guest: "/data"}}})
	out, err := runWasm(t, mounted, 30*time.Second, params(task.Params{"do": "read", "path": "/data/model.txt"}))
	if err != nil || string(out) != "weights" {
		t.Fatalf("read from a mount: %q %v", out, err)
	}
	_, err = runWasm(t, mounted, 30*time.Second, params(task.Params{"do": "write", "path": "/data/new.txt"}))
	if resilience.KindOf(err) != resilience.Io {
		t.Errorf("write to a read-only mount: %v, want exit 74 (Io)", err)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "new.txt")); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("the module wrote to the host: %v", statErr)
	}
}

// TestWasmOutputCap: a huge stdout is cut at max_output and fails the task
// (Serialization), as for process.
func TestWasmOutputCap(t *testing.T) {
	w := newWasm(t, "probe", WasmConfig{MaxOutput: 1 << 20})
	_, err := runWasm(t, w, 60*time.Second, params(task.Params{"do": "spew", "bytes": 64 << 20}))
	if resilience.KindOf(err) != resilience.Serialization || !strings.Contains(err.Error(), "output exceeds 1048576 bytes") {
		t.Fatalf("got %v, want Serialization", err)
	}
	out, err := runWasm(t, w, 60*time.Second, params(task.Params{"do": "spew", "bytes": 1 << 20}))
	if err != nil || len(out) != 1<<20 {
		t.Fatalf("exactly max_output: %d bytes, %v", len(out), err)
	}
}

// TestWasmConfigErrors: what is wrong with the configuration is said at
// construction.
func TestWasmConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notWasm := filepath.Join(dir, "x.wasm")
	if err := os.WriteFile(notWasm, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := writeWasm(t, "broken", append(append([]byte{}, wasmTrap[:len(wasmTrap)-1]...), 0x01))
	for _, tc := range []struct {
		cfg  WasmConfig
		want string
	}{
		{WasmConfig{}, "module is empty"},
		{WasmConfig{Module: filepath.Join(dir, "missing.wasm")}, "no such file"},
		{WasmConfig{Module: notWasm}, "not a WebAssembly binary"},
		{WasmConfig{Module: broken}, "wasm node: module " + broken},
		{WasmConfig{Module: broken, MemoryLimit: 1000}, "want 64KiB..4GiB"},
		{WasmConfig{Module: broken, MemoryLimit: MaxWasmMemoryLimit + WasmPageSize}, "want 64KiB..4GiB"},
		{WasmConfig{Module: broken, Mounts: []WasmMount{{Host: filepath.Join(dir, "nope"), Guest: "/d"}}}, "mount"},
		{WasmConfig{Module: broken, Mounts: []WasmMount{{Host: dir, Guest: "d"}}}, "must be absolute"},
		{WasmConfig{Module: broken, Env: map[string]string{"A=B": "x"}}, "not a variable name"},
	} {
		if _, err := Wasm(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	for in, want := range map[string]string{"/srv/m:/models": "/srv/m|/models", `C:\m:/models`: `C:\m|/models`, "/srv": "", ":/x": "", "/srv:": "", "/srv:rel": ""} {
		m, err := ParseWasmMount(in)
		if got := m.Host + "|" + m.Guest; (want == "") != (err != nil) || (err == nil && got != want) {
			t.Errorf("ParseWasmMount(%q) = %q %v, want %q", in, got, err, want)
		}
	}
}

// TestWasmCompilationCache: a second executor of the same module with the
// same cache directory starts from the cache.
func TestWasmCompilationCache(t *testing.T) {
	cache := t.TempDir()
	module := wasmModulePath(t, "echo")
	for range 2 {
		w := newWasm(t, "echo", WasmConfig{Module: module, CompilationCache: cache})
		if out, err := runWasm(t, w, 30*time.Second, &task.Envelope{Payload: []byte("hi")}); err != nil || string(out) != "hi" {
			t.Fatalf("%q %v", out, err)
		}
	}
	entries, err := os.ReadDir(cache)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache directory empty: %v", err)
	}
}

// TestWasmDocumentedExample: the Go node of docs/executors.md is
// testdata/wasm/upper, and it runs as the documentation says.
func TestWasmDocumentedExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/executors.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("testdata/wasm/upper/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```go\n"+string(src)+"```\n") {
		t.Fatal("docs/executors.md's wasm example differs from testdata/wasm/upper/main.go")
	}
	w := newWasm(t, "upper", WasmConfig{})
	if out, err := runWasm(t, w, 30*time.Second, &task.Envelope{Payload: []byte("hello")}); err != nil || string(out) != "HELLO" {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := runWasm(t, w, 30*time.Second, &task.Envelope{}); resilience.KindOf(err) != resilience.Manifest || !strings.Contains(err.Error(), "empty payload") {
		t.Fatalf("empty payload: %v, want the reported Manifest", err)
	}
}
