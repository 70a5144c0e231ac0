package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodeq/nodeq/internal/executor"
)

// emptyWasm is (module (func (export "_start"))): a WASI command that
// writes nothing and exits 0.
var emptyWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
	0x03, 0x02, 0x01, 0x00,
	0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00,
	0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
}

func writeEmptyWasm(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "empty.wasm")
	if err := os.WriteFile(path, emptyWasm, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWasmNodeChecks: each problem of a wasm node is reported at its key
// when the configuration is validated (--check-config), without compiling.
func TestWasmNodeChecks(t *testing.T) {
	dir := t.TempDir()
	module := writeEmptyWasm(t)
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		node       Node
		field, msg string
	}{
		{Node{Module: filepath.Join(dir, "missing.wasm")}, "module", "no such file"},
		{Node{Module: script}, "module", "not a WebAssembly binary"},
		{Node{Module: module, MemoryLimit: 1000}, "memory_limit", "want 64KiB..4GiB"},
		{Node{Module: module, MemoryLimit: 5 << 30}, "memory_limit", "want 64KiB..4GiB"},
		{Node{Module: module, Mounts: []string{"/srv"}}, "mounts", "want host_dir:guest_dir"},
		{Node{Module: module, Mounts: []string{dir + ":data"}}, "mounts", "must be absolute"},
		{Node{Module: module, Mounts: []string{filepath.Join(dir, "nope") + ":/data"}}, "mounts", "no such file"},
		{Node{Module: module, Mounts: []string{script + ":/data"}}, "mounts", "not a directory"},
		{Node{Module: module, Env: map[string]string{"A=B": "x"}}, "env", "not a variable name"},
	} {
		cfg := Default()
		tc.node.Executor, tc.node.Timeout = ExecWasm, 1
		cfg.Nodes = map[string]Node{"n": tc.node}
		fes := fieldErrors(t, cfg.Validate())
		if len(fes) != 1 || fes[0].Field != "nodes.n."+tc.field || !strings.Contains(fes[0].Msg, tc.msg) {
			t.Errorf("%+v: %v, want one error at %s containing %q", tc.node, fes, tc.field, tc.msg)
		}
	}
	cfg := Default()
	cfg.Nodes = map[string]Node{"n": {Executor: ExecWasm, Timeout: 1, Module: module, Mounts: []string{dir + ":/data"}, MemoryLimit: 4 << 30}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a valid node: %v", err)
	}
}

// TestWasmNodeResolvedAndBuilt: --check-config shows the defaults a wasm
// node runs with; the registry compiles the module, and a module that
// passes the cheap check but does not compile fails the start at its node.
func TestWasmNodeResolvedAndBuilt(t *testing.T) {
	module := writeEmptyWasm(t)
	cfg, err := Parse("w.yaml", []byte("nodes:\n  box:\n    executor: wasm\n    module: "+module+"\n    timeout: 5s\n    env: {TOKEN: s3cret}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := cfg.Resolved().Redacted()
	for _, line := range []string{"executor: wasm", "module: " + module, "memory_limit: 64MiB", "max_output: 16MiB"} {
		if !strings.Contains(out, line) {
			t.Errorf("%q missing:\n%s", line, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("env printed:\n%s", out)
	}
	r, err := cfg.Registry()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := r.Lookup("box")
	if !ok || !slices.Contains(r.Types(), "box") {
		t.Fatal("box not registered")
	}
	if c, ok := n.Executor.(interface{ Close() error }); !ok {
		t.Error("the wasm executor has no Close")
	} else if err := c.Close(); err != nil {
		t.Error(err)
	}

	broken := filepath.Join(t.TempDir(), "broken.wasm")
	if err := os.WriteFile(broken, append(slices.Clone(emptyWasm[:8]), 0x7f, 0x01), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Nodes = map[string]Node{"box": {Executor: ExecWasm, Timeout: 1, Module: broken}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the cheap check compiles: %v", err)
	}
	if _, err := cfg.Registry(); err == nil || !strings.Contains(err.Error(), "nodes.box") || !strings.Contains(err.Error(), "broken.wasm") {
		t.Fatalf("Registry with a module that does not compile: %v", err)
	}
	if executor.DefaultWasmMemoryLimit != 64<<20 {
		t.Error("the documented default memory_limit is 64MiB")
	}
}
