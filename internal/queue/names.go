// Package queue is nodeq's JetStream topology and messaging: the names,
// the streams and the durable consumer, publishing, the pull loop that
// hands tasks to idle workers, acks and replies, and the delivery ledger.
// Connecting and the embedded server are in package natsconn; pausing,
// status and the fleet-wide breaker state in package fleet.
package queue

import (
	"fmt"
	"strings"

	"github.com/nodeq/nodeq/internal/task"
)

// Names are the configurable JetStream names nodeq uses. The zero value of a
// field means its default (see DefaultNames).
type Names struct {
	// TaskStream holds tasks (WorkQueue retention). Default "NODEQ_TASKS".
	TaskStream string
	// TaskPrefix is the subject prefix of tasks: <prefix>.<node_type>. Default "tasks".
	TaskPrefix string
	// DLQStream holds dead-letter records (Limits retention). Default "NODEQ_DLQ".
	DLQStream string
	// DLQPrefix is the subject prefix of dead-letter records. Default "dlq".
	DLQPrefix string
	// Consumer is the durable pull consumer every worker process shares. Default "nodeq-workers".
	Consumer string
}

// DefaultNames returns the documented defaults.
func DefaultNames() Names {
	return Names{TaskStream: "NODEQ_TASKS", TaskPrefix: "tasks", DLQStream: "NODEQ_DLQ", DLQPrefix: "dlq", Consumer: "nodeq-workers"}
}

// Resolve fills empty fields with their defaults and validates the
// result. Names are resolved once, where they enter the program (the
// configuration, a command's flags); everything else takes them as they are.
func (n Names) Resolve() (Names, error) {
	d := DefaultNames()
	for _, f := range []struct {
		dst *string
		def string
	}{
		{&n.TaskStream, d.TaskStream}, {&n.TaskPrefix, d.TaskPrefix}, {&n.DLQStream, d.DLQStream},
		{&n.DLQPrefix, d.DLQPrefix}, {&n.Consumer, d.Consumer},
	} {
		if *f.dst == "" {
			*f.dst = f.def
		}
	}
	return n, n.Validate()
}

// Validate checks that the names are set and usable as stream, consumer
// and subject names.
func (n Names) Validate() error {
	for field, v := range map[string]string{"task_stream": n.TaskStream, "task_prefix": n.TaskPrefix, "dlq_stream": n.DLQStream, "dlq_prefix": n.DLQPrefix, "consumer": n.Consumer} {
		if v == "" {
			return fmt.Errorf("%s is empty", field)
		}
	}
	for field, v := range map[string]string{"task_stream": n.TaskStream, "dlq_stream": n.DLQStream, "consumer": n.Consumer} {
		if strings.ContainsAny(v, ". *>/\\\t\r\n") {
			return fmt.Errorf("%s %q: a stream or consumer name cannot contain '.', '*', '>', '/', '\\' or spaces", field, v)
		}
	}
	for field, v := range map[string]string{"task_prefix": n.TaskPrefix, "dlq_prefix": n.DLQPrefix} {
		if strings.ContainsAny(v, " *>\t\r\n") || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..") {
			return fmt.Errorf("%s %q: want subject tokens without wildcards, e.g. \"tasks\" or \"prod.tasks\"", field, v)
		}
	}
	if n.TaskPrefix == n.DLQPrefix {
		return fmt.Errorf("task_prefix and dlq_prefix are both %q; they must differ", n.TaskPrefix)
	}
	return nil
}

// TaskSubject is the subject of tasks of one node type.
func (n Names) TaskSubject(nodeType string) string { return n.TaskPrefix + "." + nodeType }

// DLQSubject is the subject of dead-letter records of one node type.
func (n Names) DLQSubject(nodeType string) string { return n.DLQPrefix + "." + nodeType }

// InvalidNodeType is the node type token used for dead-letter records of
// messages whose node type cannot be read.
const InvalidNodeType = "_invalid"

// NodeTypeOf returns the node type named by a task subject, or
// InvalidNodeType when the subject does not name a valid one.
func (n Names) NodeTypeOf(subject string) string {
	t, ok := strings.CutPrefix(subject, n.TaskPrefix+".")
	if !ok || !task.ValidNodeType(t) {
		return InvalidNodeType
	}
	return t
}
