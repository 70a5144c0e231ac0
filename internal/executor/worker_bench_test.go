package executor

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/task"
)

// The Python echo node three ways, per task (docs/benchmarks.md):
//
//	go test -run '^$' -bench 'Echo' -benchtime 2s ./internal/executor/
func benchEcho(b *testing.B, ex Executor) {
	env := &task.Envelope{ID: "1vQq7h3wN2cL8pXgT0aZ4e", NodeType: "echo", Payload: make([]byte, 256)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for b.Loop() {
		out, err := ex.Execute(ctx, env)
		if err != nil || len(out) != 256 {
			b.Fatalf("%d bytes, %v", len(out), err)
		}
	}
}

// BenchmarkPythonEchoWorker: sdk/python/examples/echo_node.py in a pool of one process.
func BenchmarkPythonEchoWorker(b *testing.B) {
	benchEcho(b, pyCommand(b, []string{python3(b), filepath.Join(sdkDir(b), "examples", "echo_node.py")}))
}

// BenchmarkPythonEchoProcess: the same node logic as one python3 per task.
func BenchmarkPythonEchoProcess(b *testing.B) {
	ex, err := Process(ProcessConfig{Command: []string{python3(b), "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"}, PassEnv: []string{"PATH", "HOME"}})
	if err != nil {
		b.Fatal(err)
	}
	benchEcho(b, ex)
}

// BenchmarkBuiltinEcho: the built-in echo.
func BenchmarkBuiltinEcho(b *testing.B) { benchEcho(b, Echo()) }
