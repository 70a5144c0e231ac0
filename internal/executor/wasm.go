package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// WebAssembly memory is counted in pages of 64 KiB; a module addresses at
// most 65536 of them (4 GiB).
const (
	WasmPageSize       = 64 << 10
	MaxWasmMemoryLimit = 65536 * WasmPageSize
	// DefaultWasmMemoryLimit is the default memory limit of a wasm node's
	// instance: 64 MiB.
	DefaultWasmMemoryLimit = 64 << 20
)

// WasmConfig configures a wasm node: a WASI (preview 1) module run once per
// task in a fresh instance. The module comes from the operator's
// configuration, never from a task.
type WasmConfig struct {
	// Module is the path of the .wasm file, compiled once by Wasm.
	Module string
	// Env sets variables for the module. Its environment holds only these
	// and the NODEQ_* task variables (as for process); nothing of the
	// consumer's.
	Env map[string]string
	// Mounts are host directories the module may read, each at a guest
	// path; nothing else of the host's filesystem is visible.
	Mounts []WasmMount
	// MemoryLimit caps an instance's linear memory in bytes, rounded down
	// to whole 64 KiB pages; at most 4 GiB. 0 means 64 MiB. A module that
	// declares more initial memory than this fails to compile.
	MemoryLimit int64
	// MaxOutput caps captured stdout in bytes; more is an error. 0 means 16 MiB.
	MaxOutput int
	// CompilationCache, if set, is a directory where compiled code is kept
	// across restarts, so that a restart skips the compilation.
	CompilationCache string

	// sharedCache, if set and CompilationCache is not, is an in-memory
	// cache shared by the executors of a test run; it is not closed.
	sharedCache wazero.CompilationCache
}

// WasmMount is a host directory mounted read-only in a wasm module.
type WasmMount struct {
	// Host is the directory on this machine.
	Host string
	// Guest is the absolute path the module sees it at, e.g. "/data".
	Guest string
}

// ParseWasmMount reads "host_dir:guest_dir". The guest part follows the
// last colon, so a Windows host path ("C:\data:/data") works.
func ParseWasmMount(s string) (WasmMount, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return WasmMount{}, fmt.Errorf("mount %q: want host_dir:guest_dir, e.g. /srv/models:/models", s)
	}
	m := WasmMount{Host: s[:i], Guest: s[i+1:]}
	if !strings.HasPrefix(m.Guest, "/") {
		return WasmMount{}, fmt.Errorf("mount %q: the guest path %q must be absolute", s, m.Guest)
	}
	return m, nil
}

// WasmModule is the executor of a wasm node: the compiled module and the
// runtime that runs its instances. Close releases them.
type WasmModule struct {
	cfg      WasmConfig
	name     string
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
	cache    wazero.CompilationCache
	closeMu  sync.Once
	closeErr error
}

// Check reports what is wrong with cfg without compiling the module: the
// module is read and must be a WebAssembly binary, the mounts directories,
// the limits in bounds. Wasm checks it too.
func (cfg WasmConfig) Check() error {
	_, err := cfg.check()
	return err
}

func (cfg WasmConfig) check() ([]byte, error) {
	bad := func(field string, err error) error { return &WasmConfigError{Field: field, Err: err} }
	if cfg.Module == "" {
		return nil, bad("module", errors.New("module is empty"))
	}
	if cfg.MemoryLimit != 0 && (cfg.MemoryLimit < WasmPageSize || cfg.MemoryLimit > MaxWasmMemoryLimit) {
		return nil, bad("memory_limit", fmt.Errorf("memory limit %d bytes: want 64KiB..4GiB", cfg.MemoryLimit))
	}
	if cfg.MaxOutput < 0 {
		return nil, bad("max_output", fmt.Errorf("max output %d bytes: must not be negative", cfg.MaxOutput))
	}
	if err := checkEnvConfig(ProcessConfig{Env: cfg.Env}); err != nil {
		return nil, bad("env", errors.New(strings.TrimPrefix(err.Error(), "process node: ")))
	}
	for _, m := range cfg.Mounts {
		if fi, err := os.Stat(m.Host); err != nil {
			return nil, bad("mounts", fmt.Errorf("mount %s: %w", m.Host, err))
		} else if !fi.IsDir() {
			return nil, bad("mounts", fmt.Errorf("mount %s: not a directory", m.Host))
		}
		if !strings.HasPrefix(m.Guest, "/") {
			return nil, bad("mounts", fmt.Errorf("mount %s: the guest path %q must be absolute", m.Host, m.Guest))
		}
	}
	code, err := ReadWasmModule(cfg.Module)
	if err != nil {
		return nil, bad("module", err)
	}
	return code, nil
}

// WasmConfigError is what is wrong with a WasmConfig: Field names the
// node key ("module", "mounts", "memory_limit", "env", "max_output",
// "compilation_cache").
type WasmConfigError struct {
	Field string
	Err   error
}

// Error implements error.
func (e *WasmConfigError) Error() string { return "wasm node: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *WasmConfigError) Unwrap() error { return e.Err }

// Wasm reads and compiles cfg.Module. Its errors name what is wrong with
// the configuration: a missing or invalid module, a bad mount or limit.
func Wasm(ctx context.Context, cfg WasmConfig) (*WasmModule, error) {
	code, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if cfg.MaxOutput == 0 {
		cfg.MaxOutput = defaultMaxOutput
	}
	if cfg.MemoryLimit == 0 {
		cfg.MemoryLimit = DefaultWasmMemoryLimit
	}
	w := &WasmModule{cfg: cfg, name: filepath.Base(cfg.Module)}
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(uint32(cfg.MemoryLimit / WasmPageSize))
	if cfg.CompilationCache != "" {
		if w.cache, err = wazero.NewCompilationCacheWithDir(cfg.CompilationCache); err != nil {
			return nil, &WasmConfigError{Field: "compilation_cache", Err: fmt.Errorf("compilation cache %s: %w", cfg.CompilationCache, err)}
		}
		rc = rc.WithCompilationCache(w.cache)
	} else if cfg.sharedCache != nil {
		rc = rc.WithCompilationCache(cfg.sharedCache)
	}
	w.runtime = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, w.runtime); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("wasm node: WASI: %w", err)
	}
	if w.compiled, err = w.runtime.CompileModule(ctx, code); err != nil {
		_ = w.Close()
		return nil, &WasmConfigError{Field: "module", Err: fmt.Errorf("module %s: %w", cfg.Module, err)}
	}
	return w, nil
}

// wasmMagic starts every WebAssembly binary: "\0asm" and version 1.
var wasmMagic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// ReadWasmModule reads a .wasm file and checks that it is a WebAssembly
// binary (the cheap check done when the configuration is validated; Wasm
// compiles it).
func ReadWasmModule(path string) ([]byte, error) {
	code, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	if !bytes.HasPrefix(code, wasmMagic) {
		return nil, fmt.Errorf("module %s: not a WebAssembly binary (version 1)", path)
	}
	return code, nil
}

// Close releases the compiled module and the runtime. Tasks still running
// are stopped.
func (w *WasmModule) Close() error {
	w.closeMu.Do(func() {
		ctx := context.Background()
		if w.runtime != nil {
			w.closeErr = w.runtime.Close(ctx)
		}
		if w.cache != nil {
			w.closeErr = errors.Join(w.closeErr, w.cache.Close(ctx))
		}
	})
	return w.closeErr
}

// Execute runs the module's _start in a new instance: the payload on
// stdin, the output from stdout, the kind of a failure from the exit status
// or a "nodeq-error:" line on stderr, as for process.
func (w *WasmModule) Execute(ctx context.Context, t *task.Envelope) ([]byte, error) {
	env, err := taskEnv(w.name, t, rand.Text())
	if err != nil {
		return nil, err
	}
	stdout := &limitedBuffer{max: w.cfg.MaxOutput}
	stderr := &limitedBuffer{max: maxStderr, tail: true}
	mc := wazero.NewModuleConfig().
		WithName(""). // anonymous: instances of one module run at once
		WithArgs(w.name).
		WithStdin(bytes.NewReader(t.Payload)).
		WithStdout(stdout).
		WithStderr(stderr).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep()
	for k, v := range w.cfg.Env {
		mc = mc.WithEnv(k, v)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		mc = mc.WithEnv(k, v)
	}
	if len(w.cfg.Mounts) > 0 {
		fs := wazero.NewFSConfig()
		for _, m := range w.cfg.Mounts {
			fs = fs.WithReadOnlyDirMount(m.Host, m.Guest)
		}
		mc = mc.WithFSConfig(fs)
	}
	mod, err := w.runtime.InstantiateModule(ctx, w.compiled, mc)
	if mod != nil {
		_ = mod.Close(context.Background())
	}
	if err != nil {
		return nil, w.classify(ctx, err, stderr.buf.String())
	}
	if stdout.overflow {
		return nil, resilience.Errorf(resilience.Serialization, "wasm %s: output exceeds %d bytes", w.name, w.cfg.MaxOutput)
	}
	return stdout.buf.Bytes(), nil
}

// classify maps a failed run to a kind: a run stopped by its deadline is
// Execution (as a process killed on timeout); an exit status and a
// "nodeq-error:" line as for process, except that a Go module that ran out
// of memory is Wasm; a trap or any other failure of the runtime is Wasm.
func (w *WasmModule) classify(ctx context.Context, err error, stderr string) error {
	if ctx.Err() != nil {
		return resilience.Wrap(resilience.Execution, fmt.Errorf("wasm %s: %w (module stopped)", w.name, ctx.Err()))
	}
	var exit *sys.ExitError
	if !errors.As(err, &exit) {
		return resilience.Wrap(resilience.Wasm, fmt.Errorf("wasm %s: %w", w.name, err))
	}
	if kind, msg, ok := reportedError(stderr); ok {
		return resilience.Wrap(kind, fmt.Errorf("wasm %s: %s", w.name, msg))
	}
	if outOfMemory(stderr) {
		return resilience.Errorf(resilience.Wasm, "wasm %s: out of memory (memory limit %d bytes)%s", w.name, w.cfg.MemoryLimit, lastLine(stderr))
	}
	return resilience.Wrap(exitKind(int(exit.ExitCode())), fmt.Errorf("wasm %s: exit status %d%s", w.name, exit.ExitCode(), lastLine(stderr)))
}

// outOfMemory recognises the Go runtime's report of a failed memory.grow,
// which it gives before exiting with status 2 (a module in another language
// usually traps instead).
func outOfMemory(stderr string) bool {
	return strings.Contains(stderr, "fatal error: out of memory") || strings.Contains(stderr, "runtime: out of memory")
}

// exitKind maps an exit status of the process protocol to its kind.
func exitKind(code int) resilience.Kind {
	switch code {
	case ExitTempFail:
		return resilience.Execution
	case ExitIOErr:
		return resilience.Io
	case ExitUnavailable:
		return resilience.Transport
	case ExitDataErr:
		return resilience.Marshaling
	case ExitUsage, ExitConfig:
		return resilience.Manifest
	}
	return resilience.Other
}

var _ Executor = (*WasmModule)(nil)
