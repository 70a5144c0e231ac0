package config

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// fieldErrors returns the FieldErrors of a Validate result.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var fes []*FieldError
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("not a FieldError: %v", e)
		}
		fes = append(fes, fe)
	}
	return fes
}

// TestExecutorKindsTable checks the table against Node: every key an entry
// names is a Node key of its own, every Node key belongs to all executors
// or to some, and defaults are given only for an entry's own keys.
func TestExecutorKindsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range executorKinds {
		if k.name == "" || seen[k.name] || k.build == nil {
			t.Errorf("entry %q: a name, once, and a build function", k.name)
		}
		seen[k.name] = true
		for _, key := range k.keys {
			if _, ok := fieldByKey(reflect.TypeFor[Node](), key); !ok || slices.Contains(commonNodeKeys, key) {
				t.Errorf("%s: key %q is not an executor's key of Node", k.name, key)
			}
		}
		defaults := reflect.ValueOf(k.defaults)
		for i := range defaults.NumField() {
			key, _, _ := strings.Cut(reflect.TypeFor[Node]().Field(i).Tag.Get("yaml"), ",")
			if isSet(defaults.Field(i)) && !slices.Contains(k.keys, key) {
				t.Errorf("%s: default for %q, which it does not take", k.name, key)
			}
		}
	}
	for _, key := range commonNodeKeys {
		if _, ok := fieldByKey(reflect.TypeFor[Node](), key); !ok {
			t.Errorf("common key %q is not in Node", key)
		}
	}
	for _, key := range executorKeys() {
		if len(kindNames(func(k executorKind) bool { return slices.Contains(k.keys, key) })) == 0 {
			t.Errorf("Node key %q belongs to no executor: add it to an entry's keys, or to commonNodeKeys", key)
		}
	}
}

// TestEveryExecutorThroughTheTable validates, builds and runs a node of
// every executor kind from a file.
func TestEveryExecutorThroughTheTable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "posted") }))
	defer srv.Close()
	yml := fmt.Sprintf(`nodes:
  echo: {}
  sleep: {max_duration: 1s}
  fault: {}
  cat: {executor: process, command: [/bin/cat], timeout: 5s}
  hook: {executor: http, url: %q, timeout: 5s}
  box: {executor: wasm, module: %q, timeout: 5s}
  py: {executor: worker, command: [python3, ../../sdk/python/examples/upper_node.py], pass_env: [PATH, HOME], timeout: 20s}
`, srv.URL, writeEmptyWasm(t))
	cfg, err := Parse("all.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := cfg.Registry()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for name, n := range cfg.Resolved().Nodes {
		kinds[n.Executor] = name
	}
	for _, k := range executorKinds {
		if kinds[k.name] == "" {
			t.Errorf("executor %s is not in this test: add a node of it", k.name)
		}
	}
	env := &task.Envelope{ID: "t1", NodeType: "x", Payload: []byte("hi"), Params: task.Params{"duration": "1ms"}}
	for name, want := range map[string]string{"echo": "hi", "sleep": "hi", "cat": "hi", "hook": "posted", "fault": "", "box": "", "py": "HI"} {
		n, ok := r.Lookup(name)
		if !ok {
			t.Fatalf("%s not registered", name)
		}
		if _, err := exec.LookPath("python3"); name == "py" && err != nil && os.Getenv("CI") == "" {
			t.Log("python3 not found: the worker node is built but not run (CI installs python3 and runs it)")
			continue
		}
		out, err := n.Run(context.Background(), env)
		switch {
		case name == "fault" && resilience.KindOf(err) != resilience.Execution:
			t.Errorf("fault: %v", err)
		case name != "fault" && (err != nil || string(out) != want):
			t.Errorf("%s: %q %v, want %q", name, out, err, want)
		}
	}
	if n, _ := r.Lookup("sleep"); n.Executor == nil {
		t.Fatal("no executor")
	} else if _, err := n.Run(context.Background(), &task.Envelope{Params: task.Params{"duration": "2s"}}); resilience.KindOf(err) != resilience.Manifest {
		t.Fatalf("sleep's max_duration of 1s not applied: %v", err)
	}
}

func TestUnknownExecutorNamesTheKnownOnes(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte("nodes:\n  r:\n    executor: lambda\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `x.yaml:3: nodes.r.executor: unknown executor "lambda": want echo, sleep, fault, process, http, wasm or worker`
	if err := cfg.Validate(); err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	cfg, _ = Parse("x.yaml", []byte("nodes:\n  resize:\n    timeout: 1s\n"))
	want = `x.yaml:2: nodes.resize.executor: required: "resize" is not a built-in node type, so say which executor runs it (process, http, wasm or worker)`
	if err := cfg.Validate(); err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if _, err := (&Config{Nodes: map[string]Node{"r": {Executor: "lambda"}}}).Registry(); err == nil || !strings.Contains(err.Error(), `unknown executor "lambda"`) {
		t.Fatalf("Registry: %v", err)
	}
}

// setValue gives a Node field a value that counts as set.
func setValue(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Slice:
		v.Set(reflect.ValueOf([]string{"x"}))
	case reflect.Map:
		v.Set(reflect.ValueOf(map[string]string{"X": "x"}))
	case reflect.Int64:
		v.SetInt(int64(time.Second))
	case reflect.Int:
		v.SetInt(1)
	default:
		t.Fatalf("no test value for a %s", v.Type())
	}
}

// TestKeyOfAnotherExecutor: every executor refuses every key of the
// others, naming the executors that take it.
func TestKeyOfAnotherExecutor(t *testing.T) {
	for _, k := range executorKinds {
		for _, key := range executorKeys() {
			if slices.Contains(k.keys, key) {
				continue
			}
			cfg := Default()
			n := Node{Executor: k.name}
			setValue(t, reflect.ValueOf(&n).Elem().FieldByIndex(nodeField(key).Index))
			cfg.Nodes = map[string]Node{"n": n}
			takers := kindNames(func(o executorKind) bool { return slices.Contains(o.keys, key) })
			want := fmt.Sprintf("nodes.n.%s: only applies to executor %s, not %s", key, list(takers, "or"), k.name)
			found := false
			for _, fe := range fieldErrors(t, cfg.Validate()) {
				found = found || fe.Error() == want
			}
			if !found {
				t.Errorf("%s with %s: %v\nwant %s", k.name, key, cfg.Validate(), want)
			}
		}
	}
	// An empty list or map is not a key given.
	cfg := Default()
	cfg.Nodes = map[string]Node{"echo": {Env: map[string]string{}, Command: []string{}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRequiredKeys: process needs a command and a timeout, http a url and
// a timeout, each reported at its key.
func TestRequiredKeys(t *testing.T) {
	for _, k := range executorKinds {
		cfg := Default()
		cfg.Nodes = map[string]Node{"n": {Executor: k.name}}
		var fields []string
		for _, fe := range fieldErrors(t, cfg.Validate()) {
			fields = append(fields, fe.Field)
		}
		var want []string
		switch k.name {
		case ExecProcess:
			want = []string{"nodes.n.command", "nodes.n.timeout"}
		case ExecHTTP:
			want = []string{"nodes.n.url", "nodes.n.timeout"}
		case ExecWasm:
			want = []string{"nodes.n.module", "nodes.n.timeout"}
		case ExecWorker:
			want = []string{"nodes.n.command", "nodes.n.timeout"}
		}
		if !slices.Equal(fields, want) {
			t.Errorf("%s with no keys: errors at %v, want %v", k.name, fields, want)
		}
	}
	cfg := Default()
	cfg.Nodes = map[string]Node{"s": {Executor: ExecSleep, MaxDuration: -time.Second}}
	if err := cfg.Validate(); err == nil || err.Error() != "nodes.s.max_duration: must not be negative" {
		t.Fatalf("negative max_duration: %v", err)
	}
}

// TestResolved: the defaults keys left out stand for are filled in, on a
// copy, and Redacted shows each node's own keys only.
func TestResolved(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte(`names:
  task_stream: ""
retry:
  attempts: 4
nodes:
  echo: {}
  sleep: {}
  short: {executor: sleep, max_duration: 2s}
  cat: {executor: process, command: [/bin/cat], timeout: 5s, env: {TOKEN: s3cret}}
  hook:
    executor: http
    url: http://hooks.internal/x?key=s3cret
    timeout: 5s
    headers: {Authorization: Bearer s3cret}
    retry: {delay: 1s, max_delay: 2s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	res := cfg.Resolved()
	want := map[string]Node{
		"echo":  {Executor: ExecEcho},
		"sleep": {Executor: ExecSleep, MaxDuration: time.Hour},
		"short": {Executor: ExecSleep, MaxDuration: 2 * time.Second},
		"cat":   {Executor: ExecProcess, Command: []string{"/bin/cat"}, Timeout: 5 * time.Second, Env: map[string]string{"TOKEN": "s3cret"}, MaxOutput: executor.DefaultMaxOutput},
		"hook": {Executor: ExecHTTP, URL: "http://hooks.internal/x?key=s3cret", Timeout: 5 * time.Second, Headers: map[string]string{"Authorization": "Bearer s3cret"},
			MaxResponse: executor.DefaultMaxResponse,
			Retry:       &Retry{Policy: RetryExponential, Attempts: 4, Delay: time.Second, Multiplier: 2, MaxDelay: 2 * time.Second}},
	}
	if !reflect.DeepEqual(res.Nodes, want) {
		t.Fatalf("resolved nodes\n%+v\nwant\n%+v", res.Nodes, want)
	}
	if res.Names.TaskStream != "NODEQ_TASKS" || cfg.Names.TaskStream != "" || cfg.Nodes["sleep"].MaxDuration != 0 || cfg.Nodes["hook"].Retry.Attempts != 0 {
		t.Fatal("Resolved must fill a copy and leave the configuration as it is")
	}

	out := res.Redacted()
	if strings.Contains(out, "s3cret") {
		t.Fatalf("secret printed:\n%s", out)
	}
	back, err := Parse("out.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the output does not read back: %v\n%s", err, out)
	}
	for name, n := range back.Nodes {
		n.Env, n.Headers, n.URL = want[name].Env, want[name].Headers, want[name].URL // masked
		if len(n.PassEnv) == 0 {
			n.PassEnv = nil // written as []
		}
		if !reflect.DeepEqual(n, want[name]) {
			t.Errorf("printed %s reads back as %+v, want %+v", name, n, want[name])
		}
	}
	for _, line := range []string{"max_output: 16MiB", "max_response: 16MiB", "max_duration: 1h0m0s", "executor: echo"} {
		if !strings.Contains(out, line) {
			t.Errorf("%q missing:\n%s", line, out)
		}
	}
	echo := out[strings.Index(out, "    echo:"):strings.Index(out, "    hook:")]
	for _, other := range []string{"command", "url", "max_duration", "retry"} {
		if strings.Contains(echo, other) {
			t.Errorf("the echo node shows %s, which it does not take:\n%s", other, echo)
		}
	}
}
