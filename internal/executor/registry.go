// Package executor runs nodes: the Executor interface, the registry that maps a
// node type to its executor, and the built-in executors.
package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Executor runs one task and returns the node's output. Errors should carry a
// resilience.Kind (see resilience.Wrap); an error without one is permanent.
// Execute must return promptly once ctx is done.
type Executor interface {
	Execute(ctx context.Context, t *task.Envelope) ([]byte, error)
}

// Func adapts a function to Executor.
type Func func(ctx context.Context, t *task.Envelope) ([]byte, error)

// Execute calls f.
func (f Func) Execute(ctx context.Context, t *task.Envelope) ([]byte, error) { return f(ctx, t) }

// Node is a registered node type with its limits.
type Node struct {
	// Type is the node type name, the last token of tasks.<node_type>.
	Type string
	// Executor runs the node.
	Executor Executor
	// Timeout bounds one execution; 0 means no timeout of its own.
	Timeout time.Duration
	// Concurrency bounds simultaneous executions in this process; 0 means
	// only the consumer's worker count bounds it.
	Concurrency int
	// Retry is the node type's in-process retry policy; nil means the
	// consumer's default.
	Retry resilience.Policy

	sem chan struct{}
}

// Registry maps node types to nodes. It is built at start and then only read.
type Registry struct {
	nodes map[string]*Node
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{nodes: map[string]*Node{}} }

// Register adds a node. The type must be a valid node type and not yet registered.
func (r *Registry) Register(n Node) error {
	if !task.ValidNodeType(n.Type) {
		return fmt.Errorf("register node: invalid node type %q: use 1-64 of [A-Za-z0-9_-]", n.Type)
	}
	if _, dup := r.nodes[n.Type]; dup {
		return fmt.Errorf("register node: node type %q registered twice", n.Type)
	}
	if n.Executor == nil {
		return fmt.Errorf("register node %q: nil executor", n.Type)
	}
	if n.Concurrency < 0 || n.Timeout < 0 {
		return fmt.Errorf("register node %q: negative timeout or concurrency", n.Type)
	}
	if n.Concurrency > 0 {
		n.sem = make(chan struct{}, n.Concurrency)
	}
	r.nodes[n.Type] = &n
	return nil
}

// Lookup returns the node for a type.
func (r *Registry) Lookup(nodeType string) (*Node, bool) {
	n, ok := r.nodes[nodeType]
	return n, ok
}

// Close releases what the registered executors hold (a compiled
// WebAssembly module, a pool of worker processes): every executor that is
// an io.Closer is closed. Call it once no node runs any more.
func (r *Registry) Close() error {
	var errs []error
	for _, t := range r.Types() {
		if c, ok := r.nodes[t].Executor.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node type %s: %w", t, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Types returns the registered node types, sorted.
func (r *Registry) Types() []string {
	ts := make([]string, 0, len(r.nodes))
	for t := range r.nodes {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// PanicError is a panic recovered from a node. It is permanent (kind Other).
type PanicError struct {
	Value any
	Stack string
}

// Error implements error.
func (p *PanicError) Error() string { return fmt.Sprintf("node panicked: %v", p.Value) }

// Run executes t on the node: it waits for a concurrency slot, applies the
// node's timeout, and turns a panic into a *PanicError of kind Other.
func (n *Node) Run(ctx context.Context, t *task.Envelope) (out []byte, err error) {
	if n.sem != nil {
		select {
		case n.sem <- struct{}{}:
			defer func() { <-n.sem }()
		case <-ctx.Done():
			return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("waiting for a %s slot: %w", n.Type, ctx.Err()))
		}
	}
	if n.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.Timeout)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, resilience.Wrap(resilience.Other, &PanicError{Value: r, Stack: string(debug.Stack())})
		}
	}()
	return n.Executor.Execute(ctx, t)
}
