package nodeq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Handler runs the tasks of one node type and returns the node's output,
// which becomes Result.Output for the task's waiter.
//
// A nil error acks the task. A plain error is transient: the task is
// retried (see the package doc); wrap it with Permanent to dead-letter the
// task at once. A panic is recovered and dead-letters the task with its
// stack; the process goes on. The handler must return soon after ctx is
// done: ctx ends at the task's deadline, at the handler's WithTimeout, and
// when a shutdown runs out of consumer.shutdown_timeout (the task then runs
// again on its next delivery).
type Handler func(ctx context.Context, t *Task) ([]byte, error)

// Task is one task as a Handler receives it. It is the handler's for the
// length of the call; Payload and Params are shared with the attempts that
// follow, so do not modify them.
type Task struct {
	// ID identifies the task; the producer made it unique. Use it as the
	// idempotency key of side effects: a task can run more than once.
	ID string
	// NodeID is the node's ID in the producer's pipeline graph, if any.
	NodeID string
	// NodeType is the node type the task was published to.
	NodeType string
	// CorrelationID ties the tasks of one pipeline run together, if set.
	CorrelationID string
	// Payload is the node's input: the bytes Client published, or, from a
	// producer that sent a structured value, its encoding (PayloadEncoding).
	Payload []byte
	// PayloadEncoding says how the producer carried Payload: "bytes"
	// (opaque bytes, what Client sends), "msgpack" (a msgpack value, given
	// as its msgpack encoding) or "json" (a JSON envelope's value, given as
	// its JSON text).
	PayloadEncoding string
	// Params are the task's node parameters (numbers may come as any
	// numeric type or json.Number); nil when there are none.
	Params map[string]any
	// CreatedAt is when the producer made the task; zero if unknown.
	CreatedAt time.Time
	// Deadline, if not zero, is when the task stops being worth running;
	// ctx ends then.
	Deadline time.Time
	// Attempt is the attempt within this delivery, from 1: more than 1 is
	// an in-process retry after a transient error.
	Attempt int
	// Delivery is how many times JetStream has delivered the task, from 1:
	// more than 1 means an earlier delivery failed, was handed back, or its
	// process stopped. Check for an earlier run's side effects then.
	Delivery int
}

// HandlerOption tunes one handler; see WithTimeout and WithConcurrency.
type HandlerOption func(*handlerOptions)

type handlerOptions struct {
	timeout     time.Duration
	concurrency int
}

// WithTimeout bounds one run of the handler: its ctx ends after d, and the
// handler should then return ctx.Err(), a plain error, so the attempt is
// retried. Zero (the default) means no bound besides the task's deadline.
func WithTimeout(d time.Duration) HandlerOption {
	return func(o *handlerOptions) { o.timeout = d }
}

// WithConcurrency bounds how many tasks of this node type run at once in
// the consumer, below Consumer.Workers (which bounds all of them). Zero
// (the default) means only Consumer.Workers bounds it.
func WithConcurrency(max int) HandlerOption {
	return func(o *handlerOptions) { o.concurrency = max }
}

// Permanent marks err as not worth retrying: the task is dead-lettered at
// once with reason permanent_error, and its waiter gets a *TaskError of kind
// "Other". Use it for input no retry can fix. It keeps err in the chain
// (errors.Is and errors.As see through it); a nil err stays nil.
func Permanent(err error) error { return resilience.Permanent(err) }

// Transient marks err as worth retrying, which a handler's plain error
// already is; it reads as intent, and overrides a Permanent deeper in the
// chain. A nil err stays nil.
func Transient(err error) error { return resilience.Transient(err) }

// executor adapts h to the registry: it builds the Task and gives a plain
// error the transient kind Execution. (Node.Run recovers a panic.)
func (h Handler) executor() executor.Executor {
	return executor.Func(func(ctx context.Context, env *task.Envelope) ([]byte, error) {
		a := executor.AttemptFrom(ctx)
		t := &Task{
			ID: env.ID, NodeID: env.NodeID, NodeType: env.NodeType, CorrelationID: env.CorrelationID,
			Payload: env.Payload, PayloadEncoding: env.PayloadEncoding.String(), Params: env.Params,
			CreatedAt: env.CreatedAt, Deadline: env.Deadline, Attempt: a.Number, Delivery: a.Delivery,
		}
		out, err := h(ctx, t)
		if err != nil {
			return nil, classify(err)
		}
		return out, nil
	})
}

// classify makes a handler's error transient unless Permanent or Transient
// (anything carrying a nodeq error kind) already decided.
func classify(err error) error {
	var kinded *resilience.Error
	if errors.As(err, &kinded) {
		return err
	}
	return resilience.Transient(err)
}

// checkNodeType reports why name cannot be a node type.
func checkNodeType(name string) error {
	if !task.ValidNodeType(name) {
		return fmt.Errorf("invalid node type %q: use 1 to 64 of A-Z a-z 0-9 _ - (it is one NATS subject token)", name)
	}
	return nil
}
