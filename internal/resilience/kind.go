// Package resilience decides what happens to a failed task: its error kind,
// whether it is retried, and when.
package resilience

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an error. Kinds are part of the wire contract: they appear
// in dead-letter records, results and logs by their String name.
type Kind uint8

// The error kinds. Execution, PythonVm, Wasm, Transport and Io are transient
// (worth retrying); the others are permanent.
const (
	// Other is an unclassified error. It is permanent.
	Other Kind = iota
	// Execution is a node that failed while running, e.g. a process that exited with 75.
	Execution
	// PythonVm is a failure of a Python runtime hosting a node.
	PythonVm
	// Wasm is a failure of a WebAssembly runtime hosting a node.
	Wasm
	// Transport is a network failure talking to a downstream (refused, reset, 5xx, 429, timeout).
	Transport
	// Io is a local I/O failure (disk, pipe).
	Io
	// Manifest is a task that cannot run as described: unknown node type, bad params.
	Manifest
	// Marshaling is an envelope or payload that cannot be decoded.
	Marshaling
	// Serialization is an output that cannot be encoded.
	Serialization
)

var kindNames = [...]string{
	Other: "Other", Execution: "Execution", PythonVm: "PythonVm", Wasm: "Wasm",
	Transport: "Transport", Io: "Io", Manifest: "Manifest", Marshaling: "Marshaling",
	Serialization: "Serialization",
}

// String returns the kind's wire name, e.g. "Transport".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Retryable reports whether errors of this kind are transient.
func (k Kind) Retryable() bool {
	switch k {
	case Execution, PythonVm, Wasm, Transport, Io:
		return true
	}
	return false
}

// ParseKind reads a kind name, ignoring case ("transport", "Transport").
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if strings.EqualFold(n, s) {
			return Kind(i), nil
		}
	}
	return Other, fmt.Errorf("unknown error kind %q (want one of %s)", s, strings.Join(kindNames[:], ", "))
}

// Error is an error with a kind. Executors return it, wrapping the cause.
type Error struct {
	Kind Kind
	Err  error
	// retry overrides the kind's retryability when set by Permanent or Transient.
	retry *bool
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err == nil {
		return e.Kind.String() + " error"
	}
	return e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Wrap gives err a kind. A nil err stays nil.
func Wrap(kind Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: kind, Err: err}
}

// Errorf is fmt.Errorf with a kind.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// Permanent marks err as not worth retrying, whatever its kind. Its kind is
// kept (Other when it had none).
func Permanent(err error) error { return mark(err, false) }

// Transient marks err as worth retrying, whatever its kind. An error without
// a kind becomes Execution.
func Transient(err error) error { return mark(err, true) }

func mark(err error, retry bool) error {
	if err == nil {
		return nil
	}
	kind := Other
	var e *Error
	if errors.As(err, &e) {
		kind = e.Kind
	} else if retry {
		kind = Execution
	}
	return &Error{Kind: kind, Err: err, retry: &retry}
}

// Retryable reports whether err is worth retrying: an explicit Permanent or
// Transient mark decides first (the outermost one), then the kind.
func Retryable(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if re, ok := e.(*Error); ok && re.retry != nil {
			return *re.retry
		}
	}
	return KindOf(err).Retryable()
}

// KindOf returns the kind of the outermost *Error in err's chain, or Other
// when there is none: an unclassified error is permanent.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Other
}
