package executor

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// WorkerProtocol is the version of the worker framing protocol this
// consumer speaks (docs/executors.md, "worker"). A worker's ready message
// must name it.
const WorkerProtocol = 1

// Message types of the worker protocol.
const (
	msgReady  = "ready"
	msgTask   = "task"
	msgResult = "result"
	msgError  = "error"
)

// workerRequest is one task sent to a worker: one line of JSON.
type workerRequest struct {
	Type            string      `json:"type"`
	ID              string      `json:"id"`
	NodeType        string      `json:"node_type"`
	NodeID          string      `json:"node_id,omitempty"`
	CorrelationID   string      `json:"correlation_id,omitempty"`
	Params          task.Params `json:"params"`
	Payload         string      `json:"payload"`
	PayloadEncoding string      `json:"payload_encoding"`
	Attempt         int         `json:"attempt"`
	Delivery        int         `json:"delivery"`
	Deadline        string      `json:"deadline,omitempty"`
}

// workerMessage is any line a worker writes to stdout.
type workerMessage struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol"`
	Runtime  string `json:"runtime"`
	ID       string `json:"id"`
	Output   string `json:"output"`
	Kind     string `json:"kind"`
	Message  string `json:"message"`
}

// maxErrorMessage bounds the message of a worker's error response kept in
// the task's error.
const maxErrorMessage = 4 << 10

// errLineTooLong is a line longer than the protocol allows.
var errLineTooLong = errors.New("line too long")

// encodeRequest renders t as one request line, newline included.
func encodeRequest(t *task.Envelope, a Attempt, deadline time.Time) ([]byte, error) {
	req := workerRequest{
		Type: msgTask, ID: t.ID, NodeType: t.NodeType, NodeID: t.NodeID, CorrelationID: t.CorrelationID,
		Params: t.Params, Payload: base64.StdEncoding.EncodeToString(t.Payload),
		PayloadEncoding: t.PayloadEncoding.String(), Attempt: max(a.Number, 1), Delivery: max(a.Delivery, 1),
	}
	if req.Params == nil {
		req.Params = task.Params{}
	}
	if !deadline.IsZero() {
		req.Deadline = deadline.UTC().Format(time.RFC3339Nano)
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, resilience.Wrap(resilience.Manifest, fmt.Errorf("params cannot be sent as JSON: %w", err))
	}
	return append(line, '\n'), nil
}

// maxLineFor is the longest stdout line accepted from a worker whose
// output is capped at maxOutput bytes: the output in base64, plus room for
// the rest of the message.
func maxLineFor(maxOutput int) int {
	return base64.StdEncoding.EncodedLen(maxOutput) + 64<<10
}

// readLine reads one line of at most limit bytes, without its newline. A
// longer line is errLineTooLong; the rest of it is not read.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// parseMessage decodes one stdout line. Anything that is not a JSON object
// with a known type is an error: the worker is not speaking the protocol.
func parseMessage(line []byte) (workerMessage, error) {
	var m workerMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("not a JSON message: %s", quoteStart(line))
	}
	switch m.Type {
	case msgReady, msgResult, msgError:
		return m, nil
	}
	return m, fmt.Errorf("unknown message type %s", quoteStart([]byte(m.Type)))
}

// checkReady checks the handshake line.
func checkReady(m workerMessage) error {
	if m.Type != msgReady {
		return fmt.Errorf("sent %q before its ready message", m.Type)
	}
	if m.Protocol != WorkerProtocol {
		return fmt.Errorf("speaks protocol %d; this consumer speaks %d", m.Protocol, WorkerProtocol)
	}
	return nil
}

// outcome turns a worker's answer to task id into the output or the
// task's error. A violation (an answer to another task, a ready message,
// undecodable output) is returned as protocolErr: the process is broken.
func outcome(m workerMessage, id string, maxOutput int, runtimeKind resilience.Kind) (out []byte, taskErr, protocolErr error) {
	if m.ID != id {
		return nil, nil, fmt.Errorf("answered task %s while running task %s", quoteStart([]byte(m.ID)), strconv.Quote(id))
	}
	switch m.Type {
	case msgResult:
		if base64.StdEncoding.DecodedLen(len(m.Output)) > maxOutput+2 {
			return nil, resilience.Errorf(resilience.Serialization, "output exceeds %d bytes", maxOutput), nil
		}
		out, err := base64.StdEncoding.DecodeString(m.Output)
		if err != nil {
			return nil, nil, fmt.Errorf("output is not base64: %w", err)
		}
		if len(out) > maxOutput {
			return nil, resilience.Errorf(resilience.Serialization, "output exceeds %d bytes", maxOutput), nil
		}
		return out, nil, nil
	case msgError:
		msg := m.Message
		if len(msg) > maxErrorMessage {
			msg = msg[:maxErrorMessage] + "..."
		}
		if m.Kind == "" {
			return nil, resilience.Wrap(runtimeKind, errors.New(msg)), nil
		}
		kind, err := resilience.ParseKind(m.Kind)
		if err != nil {
			return nil, resilience.Wrap(resilience.Other, fmt.Errorf("reported unknown error kind %s: %s", quoteStart([]byte(m.Kind)), msg)), nil
		}
		return nil, resilience.Wrap(kind, errors.New(msg)), nil
	}
	return nil, nil, fmt.Errorf("sent %q while running a task", m.Type)
}

// quoteStart quotes the first bytes of b for an error message.
func quoteStart(b []byte) string {
	const n = 80
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}

// runtimeKinds map a ready message's runtime to the kind of the failures
// of that runtime (a crash, a protocol violation, a failed start).
var runtimeKinds = map[string]resilience.Kind{"python": resilience.PythonVm, "wasm": resilience.Wasm}
