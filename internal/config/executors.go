package config

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/task"
)

// Executor names.
const (
	ExecEcho    = "echo"
	ExecSleep   = "sleep"
	ExecFault   = "fault"
	ExecProcess = "process"
	ExecHTTP    = "http"
	ExecWasm    = "wasm"
	ExecWorker  = "worker"
)

// An executorKind is one executor a node can name: the node keys it takes,
// their defaults, how they are checked and how the executor is built.
// Validate, Resolved, Redacted and Registry all go through executorKinds:
// adding an executor is adding an entry (see docs/executors.md).
type executorKind struct {
	// name is what nodes.<type>.executor says.
	name string
	// builtin: a node type of this name runs it without an executor key,
	// and it is one of the default node types.
	builtin bool
	// keys are the node keys it takes besides commonNodeKeys. Giving
	// another executor's key is an error.
	keys []string
	// defaults holds the default of each of its keys that has one: a key
	// left out (zero or empty) takes it.
	defaults Node
	// timeoutRequired: a node of this executor must set timeout.
	timeoutRequired bool
	// check, if set, reports what is wrong with a node's keys, defaults
	// filled in, through bad.
	check func(n Node, bad badKey)
	// build returns the executor of a node that passed check, defaults
	// filled in.
	build func(n Node) (executor.Executor, error)
}

// badKey reports a problem with a node's key.
type badKey func(key, format string, args ...any)

// commonNodeKeys are the node keys of every executor.
var commonNodeKeys = []string{"executor", "timeout", "concurrency", "retry"}

// executorKinds are the executors, in the order errors list them.
var executorKinds = []executorKind{
	{
		name:    ExecEcho,
		builtin: true,
		build:   func(Node) (executor.Executor, error) { return executor.Echo(), nil },
	},
	{
		name:     ExecSleep,
		builtin:  true,
		keys:     []string{"max_duration"},
		defaults: Node{MaxDuration: time.Hour},
		check: func(n Node, bad badKey) {
			if n.MaxDuration < 0 {
				bad("max_duration", "must not be negative")
			}
		},
		build: func(n Node) (executor.Executor, error) { return executor.Sleep(n.MaxDuration), nil },
	},
	{
		name:    ExecFault,
		builtin: true,
		build:   func(Node) (executor.Executor, error) { return executor.Fault(), nil },
	},
	{
		name:            ExecProcess,
		keys:            []string{"command", "dir", "env", "pass_env", "max_output"},
		defaults:        Node{MaxOutput: executor.DefaultMaxOutput},
		timeoutRequired: true,
		check: func(n Node, bad badKey) {
			if len(n.Command) == 0 {
				bad("command", `required for executor process, e.g. ["/usr/local/bin/resize", "--fast"]`)
			} else if _, err := buildProcess(n); err != nil {
				bad("command", "%s", strings.TrimPrefix(err.Error(), "process node: "))
			}
		},
		build: buildProcess,
	},
	{
		name:            ExecHTTP,
		keys:            []string{"url", "headers", "max_response"},
		defaults:        Node{MaxResponse: executor.DefaultMaxResponse},
		timeoutRequired: true,
		check: func(n Node, bad badKey) {
			if n.URL == "" {
				bad("url", "required for executor http")
			} else if _, err := buildHTTP(n); err != nil {
				bad("url", "%s", strings.TrimPrefix(err.Error(), "http node: "))
			}
		},
		build: buildHTTP,
	},
	{
		name:            ExecWasm,
		keys:            []string{"module", "env", "mounts", "memory_limit", "max_output", "compilation_cache"},
		defaults:        Node{MemoryLimit: executor.DefaultWasmMemoryLimit, MaxOutput: executor.DefaultMaxOutput},
		timeoutRequired: true,
		check: func(n Node, bad badKey) {
			if n.Module == "" {
				bad("module", "required for executor wasm, e.g. /opt/nodes/resize.wasm")
				return
			}
			cfg, err := wasmConfig(n)
			if err == nil {
				err = cfg.Check()
			}
			var ce *executor.WasmConfigError
			if errors.As(err, &ce) {
				bad(ce.Field, "%v", ce.Err)
			} else if err != nil {
				bad("module", "%s", strings.TrimPrefix(err.Error(), "wasm node: "))
			}
		},
		build: buildWasm,
	},
	workerKind,
}

// workerKind is the worker executor: a pool of long-lived processes.
var workerKind = executorKind{
	name:            ExecWorker,
	keys:            []string{"command", "dir", "env", "pass_env", "max_output", "pool_size", "max_tasks_per_process", "startup_timeout"},
	defaults:        Node{MaxOutput: executor.DefaultMaxOutput, PoolSize: executor.DefaultWorkerPoolSize, StartupTimeout: executor.DefaultWorkerStartupTimeout},
	timeoutRequired: true,
	check: func(n Node, bad badKey) {
		switch {
		case len(n.Command) == 0:
			bad("command", `required for executor worker, e.g. ["python3", "/srv/nodes/resize.py"]`)
		case n.PoolSize < 1 || n.PoolSize > executor.MaxWorkerPoolSize:
			bad("pool_size", "%d is outside 1..%d", n.PoolSize, executor.MaxWorkerPoolSize)
		case n.MaxTasksPerProcess < 0:
			bad("max_tasks_per_process", "must not be negative (0 never recycles)")
		case n.StartupTimeout < 0:
			bad("startup_timeout", "must not be negative")
		default:
			if _, err := buildWorker(n); err != nil {
				bad("command", "%s", strings.TrimPrefix(err.Error(), "worker node: "))
			}
		}
	},
	build: buildWorker,
}

func buildWorker(n Node) (executor.Executor, error) {
	return executor.Worker(executor.WorkerConfig{Command: n.Command, Dir: n.Dir, Env: n.Env, PassEnv: n.PassEnv, MaxOutput: int(n.MaxOutput),
		PoolSize: n.PoolSize, MaxTasksPerProcess: n.MaxTasksPerProcess, StartupTimeout: n.StartupTimeout})
}

func buildProcess(n Node) (executor.Executor, error) {
	return executor.Process(executor.ProcessConfig{Command: n.Command, Dir: n.Dir, Env: n.Env, PassEnv: n.PassEnv, MaxOutput: int(n.MaxOutput)})
}

func buildHTTP(n Node) (executor.Executor, error) {
	return executor.HTTP(executor.HTTPConfig{URL: n.URL, Headers: n.Headers, MaxResponse: int64(n.MaxResponse)})
}

// wasmConfig reads a wasm node's keys.
func wasmConfig(n Node) (executor.WasmConfig, error) {
	cfg := executor.WasmConfig{Module: n.Module, Env: n.Env, MemoryLimit: int64(n.MemoryLimit), MaxOutput: int(n.MaxOutput), CompilationCache: n.CompilationCache}
	for _, s := range n.Mounts {
		m, err := executor.ParseWasmMount(s)
		if err != nil {
			return cfg, &executor.WasmConfigError{Field: "mounts", Err: err}
		}
		cfg.Mounts = append(cfg.Mounts, m)
	}
	return cfg, nil
}

// buildWasm compiles a wasm node's module.
func buildWasm(n Node) (executor.Executor, error) {
	cfg, err := wasmConfig(n)
	if err != nil {
		return nil, err
	}
	return executor.Wasm(context.Background(), cfg)
}

// kindOf returns the executor a node runs: its executor key, or for a
// node type named after a built-in, that built-in.
func kindOf(nodeType string, n Node) (executorKind, bool) {
	name := n.Executor
	if name == "" {
		name = nodeType
	}
	for _, k := range executorKinds {
		if k.name == name && (n.Executor != "" || k.builtin) {
			return k, true
		}
	}
	return executorKind{}, false
}

// kindNames lists the executors' names, those for which keep is true.
func kindNames(keep func(executorKind) bool) []string {
	var names []string
	for _, k := range executorKinds {
		if keep(k) {
			names = append(names, k.name)
		}
	}
	return names
}

// resolve fills in the executor's name and the defaults of its keys.
func (k executorKind) resolve(n Node) Node {
	n.Executor = k.name
	v, defaults := reflect.ValueOf(&n).Elem(), reflect.ValueOf(k.defaults)
	for _, key := range k.keys {
		f := nodeField(key)
		if !isSet(v.FieldByIndex(f.Index)) {
			v.FieldByIndex(f.Index).Set(defaults.FieldByIndex(f.Index))
		}
	}
	return n
}

// validateNode checks one node type through its executor's entry.
func (c *Config) validateNode(name string, n Node) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		keys := []string{"nodes", name}
		if key != "" {
			keys = append(keys, key)
		}
		errs = append(errs, c.fieldErrAt(keys, format, args...))
	}
	if !task.ValidNodeType(name) {
		bad("", "invalid node type name: use 1-64 of [A-Za-z0-9_-]")
	}
	if n.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if n.Concurrency < 0 {
		bad("concurrency", "must not be negative")
	}
	kind, ok := kindOf(name, n)
	switch {
	case !ok && n.Executor == "":
		bad("executor", "required: %q is not a built-in node type, so say which executor runs it (%s)",
			name, list(kindNames(func(k executorKind) bool { return !k.builtin }), "or"))
		return errs
	case !ok:
		bad("executor", "unknown executor %q: want %s", n.Executor, list(kindNames(func(executorKind) bool { return true }), "or"))
		return errs
	}
	v := reflect.ValueOf(n)
	for _, key := range executorKeys() {
		if isSet(v.FieldByIndex(nodeField(key).Index)) && !slices.Contains(kind.keys, key) {
			bad(key, "only applies to executor %s, not %s", list(kindNames(func(k executorKind) bool { return slices.Contains(k.keys, key) }), "or"), kind.name)
		}
	}
	if kind.check != nil {
		kind.check(kind.resolve(n), bad)
	}
	if kind.timeoutRequired && n.Timeout == 0 {
		bad("timeout", "required for executor %s, e.g. \"30s\"", kind.name)
	}
	return errs
}

// buildNode builds a node's executor.
func buildNode(name string, n Node) (executor.Executor, error) {
	kind, ok := kindOf(name, n)
	if !ok {
		return nil, fmt.Errorf("unknown executor %q", n.Executor)
	}
	return kind.build(kind.resolve(n))
}

// Registry builds the executor registry from a validated configuration.
func (c *Config) Registry() (*executor.Registry, error) {
	r := executor.NewRegistry()
	for _, name := range sortedKeys(c.Nodes) {
		n := c.Nodes[name]
		ex, err := buildNode(name, n)
		if err == nil {
			err = r.Register(executor.Node{Type: name, Executor: ex, Timeout: n.Timeout, Concurrency: n.Concurrency, Retry: c.nodeRetry(n)})
		}
		if err != nil {
			return nil, c.fieldErrAt([]string{"nodes", name}, "%v", err)
		}
	}
	return r, nil
}

// executorKeys are the node keys that belong to some executors, in the
// order of Node's fields.
func executorKeys() []string {
	var keys []string
	t := reflect.TypeFor[Node]()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key != "" && !slices.Contains(commonNodeKeys, key) {
			keys = append(keys, key)
		}
	}
	return keys
}

// nodeField is the Node field of a key. It panics on a key Node lacks:
// executorKinds are declared in code, and a test checks every key.
func nodeField(key string) reflect.StructField {
	f, ok := fieldByKey(reflect.TypeFor[Node](), key)
	if !ok {
		panic("config: Node has no key " + key)
	}
	return f
}

// isSet reports whether a key was given: non-zero, or a non-empty list or map.
func isSet(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Map, reflect.Slice:
		return v.Len() > 0
	}
	return !v.IsZero()
}

// list writes names as "a, b or c" (conjunction "or") or "a, b and c".
func list(names []string, conjunction string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " " + conjunction + " " + names[len(names)-1]
}
