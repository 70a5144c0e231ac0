package executor

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if err := r.Register(Node{Type: "echo", Executor: Echo()}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Node{{Type: "echo", Executor: Echo()}, {Type: "a.b", Executor: Echo()}, {Type: "x"}} {
		if err := r.Register(bad); err == nil {
			t.Errorf("registered %+v", bad)
		}
	}
	if _, ok := r.Lookup("nope"); ok {
		t.Fatal("found an unregistered type")
	}
	n, _ := r.Lookup("echo")
	out, err := n.Run(context.Background(), &task.Envelope{Payload: []byte("x")})
	if err != nil || string(out) != "x" {
		t.Fatal(out, err)
	}
}

func panicky(ctx context.Context, t *task.Envelope) ([]byte, error) { panic("kaboom") }

func TestRunRecoversPanic(t *testing.T) {
	r := NewRegistry()
	_ = r.Register(Node{Type: "p", Executor: Func(panicky)})
	n, _ := r.Lookup("p")
	_, err := n.Run(context.Background(), &task.Envelope{})
	var pe *PanicError
	if !errors.As(err, &pe) || resilience.KindOf(err) != resilience.Other {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(pe.Stack, "panicky") {
		t.Fatalf("stack does not name the panicking function:\n%s", pe.Stack)
	}
}

func TestRunTimeoutAndConcurrency(t *testing.T) {
	var running, peak atomic.Int32
	slow := Func(func(ctx context.Context, _ *task.Envelope) ([]byte, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r := NewRegistry()
	_ = r.Register(Node{Type: "slow", Executor: slow, Timeout: 50 * time.Millisecond, Concurrency: 2})
	n, _ := r.Lookup("slow")
	done := make(chan error, 6)
	for range 6 {
		go func() { _, err := n.Run(context.Background(), &task.Envelope{}); done <- err }()
	}
	for range 6 {
		if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want the node timeout, got %v", err)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d, want 2", p)
	}
}

func TestSleepAndFault(t *testing.T) {
	ctx := context.Background()
	if _, err := Sleep(time.Second).Execute(ctx, &task.Envelope{Params: task.Params{"duration": "2s"}}); resilience.KindOf(err) != resilience.Manifest {
		t.Fatalf("over max: %v", err)
	}
	if out, err := Sleep(time.Second).Execute(ctx, &task.Envelope{Payload: []byte("p"), Params: task.Params{"duration": 5}}); err != nil || string(out) != "p" {
		t.Fatalf("sleep: %q %v", out, err)
	}
	f := Fault()
	tk := &task.Envelope{ID: "a", Params: task.Params{"kind": "transport", "times": 2}}
	for i := range 2 {
		if _, err := f.Execute(ctx, tk); resilience.KindOf(err) != resilience.Transport {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	if _, err := f.Execute(ctx, tk); err != nil {
		t.Fatalf("third attempt: %v", err)
	}
	if _, err := f.Execute(ctx, &task.Envelope{ID: "b", Params: task.Params{"kind": "Manifest"}}); resilience.KindOf(err) != resilience.Manifest {
		t.Fatalf("always: %v", err)
	}
	if _, err := f.Execute(ctx, &task.Envelope{ID: "c", Params: task.Params{"probability": 0}}); err != nil {
		t.Fatalf("probability 0: %v", err)
	}
	if _, err := f.Execute(ctx, &task.Envelope{ID: "d", Params: task.Params{"kind": "nope"}}); resilience.KindOf(err) != resilience.Manifest {
		t.Fatalf("bad kind: %v", err)
	}
}

// closerExec is an executor holding something to release.
type closerExec struct {
	Func
	closed int
	err    error
}

func (c *closerExec) Close() error { c.closed++; return c.err }

// Close closes every executor that holds something, and names the node
// type of each that failed.
func TestRegistryClose(t *testing.T) {
	r := NewRegistry()
	ok, bad := &closerExec{}, &closerExec{err: errors.New("busy")}
	for typ, ex := range map[string]Executor{"a": ok, "b": bad, "plain": Echo()} {
		if err := r.Register(Node{Type: typ, Executor: ex}); err != nil {
			t.Fatal(err)
		}
	}
	err := r.Close()
	if ok.closed != 1 || bad.closed != 1 {
		t.Fatalf("closed %d and %d times, want once each", ok.closed, bad.closed)
	}
	if err == nil || !strings.Contains(err.Error(), "node type b: busy") || strings.Contains(err.Error(), "node type a") {
		t.Fatalf("Close = %v", err)
	}
}
