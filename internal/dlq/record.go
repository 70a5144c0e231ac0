// Package dlq records tasks that could not be completed: the dead-letter
// record format, how records are written to the dead-letter stream (Writer),
// and how they are read, paged, counted, replayed, or with a dry run of the
// same code checked, and purged (Store).
//
// The format is documented in docs/dead-letter.md.
package dlq

import (
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/nodeq/nodeq/internal/task"
)

// RecordVersion is the record version this package writes.
const RecordVersion = 1

// ContentType marks a dead-letter record message.
const ContentType = "application/vnd.nodeq.dead-letter+msgpack"

// Reasons a task was dead-lettered.
const (
	// ReasonInvalid: the message could not be read as a task (malformed
	// envelope, missing or mismatched node type, too large).
	ReasonInvalid = "invalid"
	// ReasonUnknownNodeType: no executor is registered for the node type.
	ReasonUnknownNodeType = "unknown_node_type"
	// ReasonPermanent: the node failed with a permanent error.
	ReasonPermanent = "permanent_error"
	// ReasonExhausted: the node kept failing with transient errors.
	ReasonExhausted = "retries_exhausted"
	// ReasonDeadline: the task's deadline passed before it could succeed.
	ReasonDeadline = "deadline_exceeded"
	// ReasonPoison: earlier deliveries of the task ended without any
	// outcome (the process running it died, hung or lost its connection)
	// too often; it is dead-lettered before it runs again.
	ReasonPoison = "poison"
)

// Reasons lists every reason a consumer writes, in the order a task meets them.
var Reasons = []string{ReasonInvalid, ReasonUnknownNodeType, ReasonPermanent, ReasonExhausted, ReasonDeadline, ReasonPoison}

// Record is one dead-lettered task: the original message untouched plus why
// and where it failed.
type Record struct {
	Version int `msgpack:"v" json:"v"`
	// Reason is one of the Reason constants.
	Reason string `msgpack:"reason" json:"reason"`
	// TaskID, NodeID, NodeType and CorrelationID come from the envelope when
	// it could be read. NodeType is "_invalid" when it could not.
	TaskID        string `msgpack:"task_id,omitempty" json:"task_id,omitempty"`
	NodeID        string `msgpack:"node_id,omitempty" json:"node_id,omitempty"`
	NodeType      string `msgpack:"node_type" json:"node_type"`
	CorrelationID string `msgpack:"correlation_id,omitempty" json:"correlation_id,omitempty"`
	// ErrorKind is the resilience.Kind name, e.g. "Transport".
	ErrorKind string `msgpack:"error_kind" json:"error_kind"`
	// Error is the error message; Causes is its chain, outermost first.
	Error  string   `msgpack:"error" json:"error"`
	Causes []string `msgpack:"causes,omitempty" json:"causes,omitempty"`
	// Stack is the stack trace of a panic.
	Stack string `msgpack:"stack,omitempty" json:"stack,omitempty"`
	// Attempts is how many times the node ran in the last delivery;
	// Deliveries how many times JetStream delivered the task.
	Attempts   int `msgpack:"attempts" json:"attempts"`
	Deliveries int `msgpack:"deliveries" json:"deliveries"`
	// FirstFailure and LastFailure bound the failures seen.
	FirstFailure time.Time `msgpack:"first_failure" json:"first_failure"`
	LastFailure  time.Time `msgpack:"last_failure" json:"last_failure"`
	// Worker identifies the consumer process (host/pid).
	Worker string `msgpack:"worker" json:"worker"`
	// Subject, Stream and Sequence locate the original message.
	Subject  string `msgpack:"subject" json:"subject"`
	Stream   string `msgpack:"stream" json:"stream"`
	Sequence uint64 `msgpack:"stream_seq" json:"stream_seq"`
	// NodeqVersion is the version of the consumer that wrote the record.
	NodeqVersion string `msgpack:"nodeq_version" json:"nodeq_version"`
	// TraceID is the trace (32 hex digits) of the consumer's spans of the
	// task, when it traces: the producer's trace when the task carried a
	// traceparent (kept in Headers), else one that began with the task.
	// Empty when tracing is off. Older readers skip it.
	TraceID string `msgpack:"trace_id,omitempty" json:"trace_id,omitempty"`
	// Headers and Data are the original message's headers and body, byte for byte.
	Headers map[string][]string `msgpack:"headers,omitempty" json:"headers,omitempty"`
	Data    []byte              `msgpack:"data" json:"data"`
}

// Encode returns the record's msgpack encoding.
func Encode(r *Record) ([]byte, error) {
	if r.Version == 0 {
		r.Version = RecordVersion
	}
	return msgpack.Marshal(r)
}

// Decode reads a record.
func Decode(data []byte) (*Record, error) {
	var r Record
	if err := task.UnmarshalMsgpack(data, &r); err != nil {
		return nil, fmt.Errorf("malformed dead-letter record: %w", err)
	}
	if r.Version < 1 || r.Version > RecordVersion {
		return nil, fmt.Errorf("dead-letter record version %d: this build reads 1..%d", r.Version, RecordVersion)
	}
	r.FirstFailure, r.LastFailure = r.FirstFailure.UTC(), r.LastFailure.UTC()
	return &r, nil
}

// CauseChain lists the messages of err and each error it wraps, outermost
// first, without repeating a message, stopping at 16 levels. A join
// contributes each of its errors' messages.
func CauseChain(err error) []string {
	var out []string
	for i := 0; err != nil && i < 16; i++ {
		if msg := err.Error(); len(out) == 0 || out[len(out)-1] != msg {
			out = append(out, msg) // kind wrappers repeat their cause's message
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if e != nil {
					out = append(out, e.Error())
				}
			}
			return out
		default:
			err = errors.Unwrap(err)
		}
	}
	return out
}
