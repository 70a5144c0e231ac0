package executor

import (
	"context"
	"testing"

	"github.com/nodeq/nodeq/internal/task"
)

// BenchmarkDispatch is the consumer's per-task path outside NATS: decode the
// envelope, validate it, find its node, run it (echo).
func BenchmarkDispatch(b *testing.B) {
	r := NewRegistry()
	_ = r.Register(Node{Type: "echo", Executor: Echo()})
	data, _ := task.EncodeMsgpack(&task.Envelope{ID: "1vQq7h3wN2cL8pXgT0aZ4e", NodeType: "echo", Payload: make([]byte, 256)})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		env, err := task.Decode(data, task.ContentTypeMsgpack)
		if err != nil {
			b.Fatal(err)
		}
		if err := env.Validate(); err != nil {
			b.Fatal(err)
		}
		n, ok := r.Lookup(env.NodeType)
		if !ok {
			b.Fatal("no node")
		}
		if _, err := n.Run(ctx, env); err != nil {
			b.Fatal(err)
		}
	}
}
