package executor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
)

// testCompilationCache keeps the code compiled by the tests' executors in
// memory, so that each module is compiled once per test run (the compiler
// is slow under the race detector).
var testCompilationCache = wazero.NewCompilationCache()

// The test modules are Go programs in testdata/wasm, built for WASI by the
// tests themselves with the Go toolchain that runs them, once per test run
// (kept in memory; each test writes the ones it uses to its own directory).
var wasmBuilds = sync.OnceValues(func() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "nodeq-wasm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go") // the toolchain running the tests: go test puts its bin first in PATH
	if err != nil {
		return nil, fmt.Errorf("building the wasm test modules needs the go command: %w", err)
	}
	names := []string{"echo", "loop", "alloc", "fail", "probe", "upper"}
	modules := map[string][]byte{}
	var mu sync.Mutex
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			out := filepath.Join(dir, name+".wasm")
			cmd := exec.Command(goTool, "build", "-o", out, "./testdata/wasm/"+name)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
			if msg, err := cmd.CombinedOutput(); err != nil {
				errs[i] = &buildError{name: name, err: err, output: string(msg)}
				return
			}
			code, err := os.ReadFile(out)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			modules[name] = code
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return modules, nil
})

type buildError struct {
	name, output string
	err          error
}

func (e *buildError) Error() string {
	return "go build " + e.name + ": " + e.err.Error() + "\n" + e.output
}

// wasmModulePath builds (once) the test module name and returns its path
// in a directory of t's own.
func wasmModulePath(t testing.TB, name string) string {
	t.Helper()
	modules, err := wasmBuilds()
	if err != nil {
		t.Fatal(err)
	}
	return writeWasm(t, name, modules[name])
}

func writeWasm(t testing.TB, name string, code []byte) string {
	t.Helper()
	if code == nil {
		t.Fatalf("no wasm module %q", name)
	}
	path := filepath.Join(t.TempDir(), name+".wasm")
	if err := os.WriteFile(path, code, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Hand-written modules, for what a Go program cannot do: a Go panic exits
// with status 2 (an exit, not a trap), so the true trap is a _start whose
// body is the single instruction unreachable.
var (
	// wasmTrap: (module (func (export "_start") unreachable))
	wasmTrap = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: func () -> ()
		0x03, 0x02, 0x01, 0x00, // functions: one of type 0
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, // export "_start"
		0x0a, 0x05, 0x01, 0x03, 0x00, 0x00, 0x0b, // code: no locals, unreachable, end
	}
	// wasmEmpty: (module (func (export "_start"))): does nothing, exits 0.
	wasmEmpty = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
		0x03, 0x02, 0x01, 0x00,
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00,
		0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
	}
	// wasmBigMemory: (module (memory 2048)): declares 128 MiB of initial memory.
	wasmBigMemory = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x05, 0x04, 0x01, 0x00, 0x80, 0x10, // memory: min 2048 pages, no max
	}
)
