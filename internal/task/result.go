package task

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Result is what a consumer publishes to a task's reply subject when the
// task has reached its outcome: success, or dead-lettered.
type Result struct {
	// Version is the result version (field "v").
	Version int `msgpack:"v" json:"v"`
	// TaskID, NodeID and NodeType repeat the task's fields.
	TaskID   string `msgpack:"task_id" json:"task_id"`
	NodeID   string `msgpack:"node_id,omitempty" json:"node_id,omitempty"`
	NodeType string `msgpack:"node_type" json:"node_type"`
	// OK is true when the node succeeded.
	OK bool `msgpack:"ok" json:"ok"`
	// Output is the node's output when OK.
	Output []byte `msgpack:"output,omitempty" json:"-"`
	// ErrorKind and Error describe the failure when not OK.
	ErrorKind string `msgpack:"error_kind,omitempty" json:"error_kind,omitempty"`
	Error     string `msgpack:"error,omitempty" json:"error,omitempty"`
	// Attempts is how many times the node ran for this delivery.
	Attempts int `msgpack:"attempts" json:"attempts"`
	// DurationMS is the time from start of the first attempt to the outcome.
	DurationMS int64 `msgpack:"duration_ms" json:"duration_ms"`
	// Worker identifies the consumer process (host/pid).
	Worker string `msgpack:"worker" json:"worker"`
}

type jsonResult struct {
	Result
	Output       json.RawMessage `json:"output,omitempty"`
	OutputBase64 []byte          `json:"output_base64,omitempty"`
}

// EncodeResult writes r as msgpack, or as JSON when asJSON is set. In JSON an
// output that is itself valid JSON is embedded as a value under "output";
// any other output is base64 under "output_base64".
func EncodeResult(r *Result, asJSON bool) ([]byte, error) {
	if r.Version == 0 {
		r.Version = Version
	}
	if !asJSON {
		return msgpack.Marshal(r)
	}
	j := jsonResult{Result: *r}
	if len(r.Output) > 0 {
		if json.Valid(r.Output) {
			j.Output = r.Output
		} else {
			j.OutputBase64 = r.Output
		}
	}
	return json.Marshal(j)
}

// DecodeResult reads a result in either encoding, chosen by contentType.
func DecodeResult(data []byte, contentType string) (*Result, error) {
	if IsJSON(contentType) {
		var j jsonResult
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("malformed JSON result: %w", err)
		}
		r := j.Result
		switch {
		case len(j.Output) > 0:
			r.Output = bytes.Clone(j.Output)
		case len(j.OutputBase64) > 0:
			r.Output = j.OutputBase64
		}
		return &r, nil
	}
	var r Result
	if err := UnmarshalMsgpack(data, &r); err != nil {
		return nil, fmt.Errorf("malformed msgpack result: %w", err)
	}
	return &r, nil
}
