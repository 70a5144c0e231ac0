package executor

import (
	"context"
	"testing"

	"github.com/nodeq/nodeq/internal/task"
)

// BenchmarkEchoExecutors compares one task's run (a 256-byte payload
// echoed back) through the wasm executor (a Go module copying stdin to
// stdout, a fresh instance per task), the process executor running cat,
// and the built-in echo. The difference is each executor's per-task
// overhead; the -parallel runs (b.RunParallel) show throughput over cores.
// wasm-empty runs a hand-written module whose _start does nothing: the
// floor of a fresh instance, without the Go runtime's start-up.
//
//	go test -run '^$' -bench EchoExecutors -benchtime 2s ./internal/executor/
func BenchmarkEchoExecutors(b *testing.B) {
	env := &task.Envelope{ID: "1vQq7h3wN2cL8pXgT0aZ4e", NodeType: "echo", Payload: make([]byte, 256)}
	wasmEcho, err := Wasm(context.Background(), WasmConfig{Module: wasmModulePath(b, "echo")})
	if err != nil {
		b.Fatal(err)
	}
	defer wasmEcho.Close()
	wasmEmpty, err := Wasm(context.Background(), WasmConfig{Module: writeWasm(b, "empty", wasmEmpty)})
	if err != nil {
		b.Fatal(err)
	}
	defer wasmEmpty.Close()
	cat, err := Process(ProcessConfig{Command: []string{"cat"}, PassEnv: []string{"PATH"}})
	if err != nil {
		b.Skip("no cat:", err)
	}
	for _, bc := range []struct {
		name  string
		ex    Executor
		empty bool
	}{{"wasm", wasmEcho, false}, {"wasm-empty", wasmEmpty, true}, {"process-cat", cat, false}, {"builtin", Echo(), false}} {
		run := func(b *testing.B, next func() bool) {
			for next() {
				out, err := bc.ex.Execute(context.Background(), env)
				if err != nil || (len(out) != len(env.Payload) && !bc.empty) {
					b.Fatalf("%d bytes, %v", len(out), err)
				}
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			run(b, b.Loop)
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) { run(b, pb.Next) })
		})
	}
}
