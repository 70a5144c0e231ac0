package dlq

import (
	"encoding/hex"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/nodeq/nodeq/internal/task"
)

// View is a stored record made readable: the record, the task it carries
// decoded as far as it can be, and its payload as a value to display. It
// is `producer dlq show --json`'s output and the console's record page.
type View struct {
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
	Record *Record   `json:"record"`
	// Task is the task's envelope without its payload (id, node_type,
	// params, ...), when it could be decoded; TaskErr says why not.
	Task    map[string]any `json:"task,omitempty"`
	TaskErr string         `json:"task_error,omitempty"`
	// Payload is the task's payload: decoded JSON or msgpack, a string of
	// UTF-8 text, or {"hex": ...} for other bytes.
	Payload any `json:"payload,omitempty"`
	// DataHex is the whole message in hex when it is not a readable task.
	DataHex string `json:"data_hex,omitempty"`
}

// Describe decodes the task of the entry's record for display. The
// entry must hold a record (Entry.Record not nil).
func Describe(en *Entry) View {
	r := en.Record
	out := View{Seq: en.Seq, Stored: en.Time, Record: r}
	var ct string
	if vs := r.Headers["Content-Type"]; len(vs) > 0 {
		ct = vs[0]
	}
	env, err := task.Decode(r.Data, ct)
	if err != nil {
		out.TaskErr = err.Error()
		out.DataHex = hex.EncodeToString(r.Data)
		return out
	}
	t := map[string]any{"v": env.Version, "id": env.ID, "node_type": env.NodeType, "payload_encoding": env.PayloadEncoding.String()}
	for k, v := range map[string]string{"node_id": env.NodeID, "correlation_id": env.CorrelationID, "reply_to": env.ReplyTo} {
		if v != "" {
			t[k] = v
		}
	}
	if len(env.Params) > 0 {
		t["params"] = env.Params
	}
	if !env.CreatedAt.IsZero() {
		t["created_at"] = env.CreatedAt
	}
	if !env.Deadline.IsZero() {
		t["deadline"] = env.Deadline
	}
	out.Task = t
	out.Payload = displayPayload(env)
	return out
}

// displayPayload returns the payload as a value to display: JSON and
// msgpack decoded, UTF-8 text as a string, other bytes as hex.
func displayPayload(env *task.Envelope) any {
	// Decoding into Go values can cost 100 times the payload's size:
	// a record's payload is a producer's, so count its values first.
	if n := task.CountValues(env.Payload, env.PayloadEncoding); n > task.MaxParamValues || n < 0 {
		return map[string]string{"hex": hex.EncodeToString(env.Payload)}
	}
	if env.PayloadEncoding == task.PayloadBytes && task.CountValues(env.Payload, task.PayloadJSON) > task.MaxParamValues {
		if utf8.Valid(env.Payload) {
			return string(env.Payload)
		}
		return map[string]string{"hex": hex.EncodeToString(env.Payload)}
	}
	switch env.PayloadEncoding {
	case task.PayloadJSON:
		var v any
		if json.Unmarshal(env.Payload, &v) == nil {
			return v
		}
	case task.PayloadMsgpack:
		var v any
		if task.UnmarshalMsgpack(env.Payload, &v) == nil {
			return v
		}
	}
	var v any
	if json.Unmarshal(env.Payload, &v) == nil {
		return v
	}
	if utf8.Valid(env.Payload) {
		return string(env.Payload)
	}
	return map[string]string{"hex": hex.EncodeToString(env.Payload)}
}
