package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// wasmModules builds the executor's Go test modules for WASI once per test
// run, with the Go toolchain running the tests.
var wasmModules = sync.OnceValues(func() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "nodeq-wasm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go") // the toolchain running the tests: go test puts its bin first in PATH
	if err != nil {
		return nil, fmt.Errorf("building the wasm test modules needs the go command: %w", err)
	}
	modules := map[string][]byte{}
	for _, name := range []string{"echo", "fail", "loop"} {
		out := filepath.Join(dir, name+".wasm")
		cmd := exec.Command(goTool, "build", "-o", out, "../internal/executor/testdata/wasm/"+name)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", name, err, msg)
		}
		if modules[name], err = os.ReadFile(out); err != nil {
			return nil, err
		}
	}
	// (module (func (export "_start") unreachable)): a true trap, which a
	// Go program cannot produce (its panics exit with status 2).
	modules["trap"] = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
		0x03, 0x02, 0x01, 0x00, 0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00,
		0x0a, 0x05, 0x01, 0x03, 0x00, 0x00, 0x0b}
	return modules, nil
})

// TestWasmNodesThroughTheConsumer: wasm nodes configured in YAML run
// through the real consumer wiring: echoes succeed; a trap (Wasm) and a
// runaway loop (stopped by its timeout: Execution) are retried in process,
// redelivered, then dead-lettered with their kind; an exit status 65
// (Marshaling, permanent) is dead-lettered after one run; nothing is lost.
func TestWasmNodesThroughTheConsumer(t *testing.T) {
	modules, err := wasmModules()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, code := range modules {
		if err := os.WriteFile(filepath.Join(dir, name+".wasm"), code, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	yml := strings.ReplaceAll(`nodes:
  wecho: {executor: wasm, module: DIR/echo.wasm, timeout: 30s, concurrency: 4}
  wfail: {executor: wasm, module: DIR/fail.wasm, timeout: 30s, retry: {attempts: 3, delay: 10ms}}
  wtrap: {executor: wasm, module: DIR/trap.wasm, timeout: 30s, retry: {attempts: 3, delay: 10ms}}
  wloop: {executor: wasm, module: DIR/loop.wasm, timeout: 200ms, memory_limit: 32MiB, retry: {attempts: 2, delay: 10ms}}
`, "DIR", filepath.ToSlash(dir))
	cfg, err := config.Parse("wasm.yaml", []byte(yml))
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
	t.Cleanup(func() {
		for _, name := range reg.Types() {
			n, _ := reg.Lookup(name)
			if c, ok := n.Executor.(io.Closer); ok {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}
		}
	})

	e := newEnv(t, queue.StreamOptions{})
	results := e.collectResults()
	e.start(reg, runnerOpts{workers: 8, redelivery: resilience.Redelivery{MaxDeliveries: 2, Backoff: []time.Duration{100 * time.Millisecond}}})

	var ids []string
	var envs []*task.Envelope
	add := func(id, nodeType string, payload []byte, p task.Params) {
		ids = append(ids, id)
		envs = append(envs, &task.Envelope{ID: id, NodeType: nodeType, ReplyTo: "results." + id, Payload: payload, Params: p})
	}
	for i := range 40 {
		add(fmt.Sprintf("echo-%d", i), "wecho", []byte(fmt.Sprintf("payload %d", i)), nil)
	}
	add("fail-65", "wfail", nil, task.Params{"exit": 65})
	add("trap", "wtrap", nil, nil)
	add("loop", "wloop", nil, nil)
	e.publish(envs...)

	eventually(t, 60*time.Second, "every task settled", func() bool {
		distinct, _, _ := results.count()
		return distinct == 40 && len(e.records()) == 3
	})
	want := map[string]struct {
		kind     string
		attempts int
		deliv    int
	}{
		"fail-65": {"Marshaling", 1, 1},
		"trap":    {"Wasm", 3, 2},
		"loop":    {"Execution", 2, 2},
	}
	for _, r := range e.records() {
		w, ok := want[r.rec.TaskID]
		if !ok || r.rec.ErrorKind != w.kind || r.rec.Attempts != w.attempts || r.rec.Deliveries != w.deliv {
			t.Errorf("dead letter %s: kind %s, %d attempts, %d deliveries (%s); want %+v", r.rec.TaskID, r.rec.ErrorKind, r.rec.Attempts, r.rec.Deliveries, r.rec.Error, w)
		}
	}
	if lost, dups := results.account(t, e, ids); lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
}
