// Package task defines the task envelope: the stable wire format that
// producers in any language publish on tasks.<node_type>, and the result
// message a consumer sends back to a task's reply subject.
//
// The format is documented byte for byte in docs/wire-format.md.
package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Version is the envelope version this package writes and the newest one it reads.
const Version = 1

// Content types carried in the Content-Type header of a task message.
const (
	ContentTypeMsgpack = "application/msgpack"
	ContentTypeJSON    = "application/json"
)

// PayloadEncoding says how an envelope carried its payload, so that an
// executor can tell raw bytes from a structured value.
type PayloadEncoding uint8

const (
	// PayloadBytes is opaque bytes: a msgpack bin or str value.
	PayloadBytes PayloadEncoding = iota
	// PayloadMsgpack is any other msgpack value, kept as its msgpack encoding.
	PayloadMsgpack
	// PayloadJSON is a JSON value from a JSON envelope, kept as its JSON text.
	PayloadJSON
)

// String returns the encoding's name as used in docs and logs.
func (p PayloadEncoding) String() string {
	switch p {
	case PayloadMsgpack:
		return "msgpack"
	case PayloadJSON:
		return "json"
	default:
		return "bytes"
	}
}

// Envelope is one task. The zero value of every optional field means "not set".
type Envelope struct {
	// Version is the envelope version (field "v"); 0 on decode means 1.
	Version int
	// ID identifies the task; producers make it unique (field "id").
	ID string
	// NodeID identifies the node in the caller's pipeline graph (field "node_id").
	NodeID string
	// NodeType selects the executor and must match the subject's last token (field "node_type").
	NodeType string
	// CorrelationID ties tasks of one pipeline run together (field "correlation_id").
	CorrelationID string
	// Payload is the node's input (field "payload").
	Payload []byte
	// PayloadEncoding says how Payload was carried.
	PayloadEncoding PayloadEncoding
	// Params are node parameters (field "params"): string keys, scalar or nested values.
	Params Params
	// CreatedAt is when the producer made the task (field "created_at").
	CreatedAt time.Time
	// Deadline, if set, is when the task stops being worth running (field "deadline").
	Deadline time.Time
	// ReplyTo, if set, is the subject the result is published to (field "reply_to").
	ReplyTo string
}

// ValidNodeType reports whether name can be a node type: 1 to 64 letters,
// digits, '_' or '-', so that it is a single NATS subject token.
func ValidNodeType(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// MaxIDLen caps the identifier fields id, node_id and correlation_id, in bytes.
const MaxIDLen = 256

// CheckID reports why s cannot be an identifier field (id, node_id,
// correlation_id): longer than MaxIDLen, not UTF-8, or holding a control
// character. Identifiers reach HTTP headers, environment variables, logs
// and operators' terminals, where such bytes would do harm.
func CheckID(s string) error {
	if len(s) > MaxIDLen {
		return fmt.Errorf("%d bytes, the limit is %d", len(s), MaxIDLen)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		if UnsafeRune(r) {
			return fmt.Errorf("control character %U at byte %d", r, i)
		}
	}
	return nil
}

// UnsafeRune reports whether r must not reach a header, a log line or a
// terminal as itself: C0 and C1 controls and DEL, the Unicode bidirectional
// controls (which make text display in another order than it is stored),
// and the line and paragraph separators.
func UnsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}

// MaxReplyToLen caps reply_to in bytes. A subject must fit the server's
// 4 KiB control line with room to spare; inboxes are far shorter.
const MaxReplyToLen = 256

// Validate checks the fields every consumer relies on. It does not decide
// whether reply_to is a subject this consumer may publish to: that is the
// consumer's reply policy.
func (e *Envelope) Validate() error {
	if e.Version < 0 || e.Version > Version {
		return &FormatError{Field: "v", Msg: fmt.Sprintf("unsupported envelope version %d (this build reads up to %d)", e.Version, Version)}
	}
	if e.ID == "" {
		return &FormatError{Field: "id", Msg: "missing task id"}
	}
	for _, f := range []struct{ name, v string }{{"id", e.ID}, {"node_id", e.NodeID}, {"correlation_id", e.CorrelationID}} {
		if err := CheckID(f.v); err != nil {
			return &FormatError{Field: f.name, Msg: err.Error()}
		}
	}
	if len(e.ReplyTo) > MaxReplyToLen {
		return &FormatError{Field: "reply_to", Msg: fmt.Sprintf("%d bytes, the limit is %d", len(e.ReplyTo), MaxReplyToLen)}
	}
	if !utf8.ValidString(e.ReplyTo) {
		return &FormatError{Field: "reply_to", Msg: "not valid UTF-8"}
	}
	if e.NodeType == "" {
		return &FormatError{Field: "node_type", Msg: "missing node type"}
	}
	if !ValidNodeType(e.NodeType) {
		return &FormatError{Field: "node_type", Msg: fmt.Sprintf("invalid node type %q: use 1-64 of [A-Za-z0-9_-]", e.NodeType)}
	}
	return nil
}

// FormatError says which field of an envelope or result is wrong and why.
type FormatError struct {
	Format string // "msgpack" or "json", empty for a semantic check
	Field  string // envelope field name, empty when the whole message is unreadable
	Msg    string
}

// Error implements error.
func (e *FormatError) Error() string {
	s := "malformed task envelope"
	if e.Format != "" {
		s = "malformed " + e.Format + " task envelope"
	}
	if e.Field != "" {
		s += ": field " + e.Field
	}
	return s + ": " + e.Msg
}

// Params are a task's node parameters. Values come from msgpack or JSON, so
// the accessors accept any numeric type and numeric strings.
type Params map[string]any

// MaxParamValues caps the values in a task's params: every scalar, string,
// array and map, and every map key, at any depth (an array of n numbers
// under one key is n+3 values with the params map). It is checked before
// params are decoded. Decoded params cost up to about 130 bytes of memory
// per value however few bytes the value took on the wire (an empty map is
// one byte), so without a cap a 1 MiB task of tiny values became over
// 100 MiB of heap; with it, params cost at most about 1.3 MB beyond the
// bytes of their strings. Bulk data belongs in the payload, which is kept
// as bytes and never decoded.
const MaxParamValues = 10000

// paramsTooMany is the error for params holding n > MaxParamValues values.
func paramsTooMany(n int) string {
	return fmt.Sprintf("params hold %d values; the limit is %d: put bulk data in payload", n, MaxParamValues)
}

// String returns the parameter as a string, formatting scalars if needed.
func (p Params) String(key string) (string, bool) {
	v, ok := p[key]
	if !ok || v == nil {
		return "", false
	}
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		return string(x), true
	default:
		return fmt.Sprint(x), true
	}
}

// Float returns a numeric parameter.
func (p Params) Float(key string) (float64, bool, error) {
	v, ok := p[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float64:
		return x, true, nil
	case float32:
		return float64(x), true, nil
	case int8:
		return float64(x), true, nil
	case int16:
		return float64(x), true, nil
	case int32:
		return float64(x), true, nil
	case int64:
		return float64(x), true, nil
	case int:
		return float64(x), true, nil
	case uint8:
		return float64(x), true, nil
	case uint16:
		return float64(x), true, nil
	case uint32:
		return float64(x), true, nil
	case uint64:
		return float64(x), true, nil
	case uint:
		return float64(x), true, nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return 0, true, fmt.Errorf("param %s: %q is not a number", key, x)
		}
		return f, true, nil
	case string:
		var f float64
		if _, err := fmt.Sscan(x, &f); err != nil {
			return 0, true, fmt.Errorf("param %s: %q is not a number", key, x)
		}
		return f, true, nil
	}
	return 0, true, fmt.Errorf("param %s: %T is not a number", key, v)
}

// Int returns an integral parameter.
func (p Params) Int(key string) (int64, bool, error) {
	f, ok, err := p.Float(key)
	if err != nil || !ok {
		return 0, ok, err
	}
	if f != float64(int64(f)) {
		return 0, true, fmt.Errorf("param %s: %v is not a whole number", key, f)
	}
	return int64(f), true, nil
}

// Duration returns a duration parameter: a Go duration string ("250ms",
// "2s") or a number of milliseconds.
func (p Params) Duration(key string) (time.Duration, bool, error) {
	v, ok := p[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	if s, isStr := v.(string); isStr {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, true, fmt.Errorf("param %s: %q is not a duration like \"250ms\" or \"2s\"", key, s)
		}
		return d, true, nil
	}
	ms, _, err := p.Float(key)
	if err != nil {
		return 0, true, fmt.Errorf("param %s: want a duration string or milliseconds: %w", key, err)
	}
	return time.Duration(ms * float64(time.Millisecond)), true, nil
}
