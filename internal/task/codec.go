package task

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Decode reads an envelope in the format named by contentType: JSON when it
// is application/json (parameters such as "; charset=utf-8" are ignored),
// msgpack otherwise. It does not call Validate. With an error it may return
// the part of the envelope read before the error (unvalidated), or nil.
func Decode(data []byte, contentType string) (*Envelope, error) {
	if IsJSON(contentType) {
		return DecodeJSON(data)
	}
	return DecodeMsgpack(data)
}

// IsJSON reports whether a Content-Type header value names JSON.
func IsJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), ContentTypeJSON)
}

// Field order of the msgpack encoding. Decoders must not depend on it; the
// golden fixture in testdata pins it so the bytes we write stay stable.
const (
	keyVersion       = "v"
	keyID            = "id"
	keyNodeID        = "node_id"
	keyNodeType      = "node_type"
	keyCorrelationID = "correlation_id"
	keyPayload       = "payload"
	keyParams        = "params"
	keyCreatedAt     = "created_at"
	keyDeadline      = "deadline"
	keyReplyTo       = "reply_to"
)

// EncodeMsgpack writes e as a msgpack map with string keys in the documented
// order, leaving out empty optional fields. Times are written as integer
// Unix milliseconds.
func EncodeMsgpack(e *Envelope) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(96 + len(e.ID) + len(e.NodeID) + len(e.NodeType) + len(e.CorrelationID) + len(e.Payload) + len(e.ReplyTo))
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	n := 3 // v, id, node_type
	for _, set := range []bool{e.NodeID != "", e.CorrelationID != "", e.Payload != nil, len(e.Params) > 0, !e.CreatedAt.IsZero(), !e.Deadline.IsZero(), e.ReplyTo != ""} {
		if set {
			n++
		}
	}
	v := e.Version
	if v == 0 {
		v = Version
	}
	w := func(err error) {
		if err != nil {
			panic(err) // bytes.Buffer writes cannot fail; params of unsupported types can
		}
	}
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("encode task envelope: %v", r)
			}
		}()
		w(enc.EncodeMapLen(n))
		w(enc.EncodeString(keyVersion))
		w(enc.EncodeInt(int64(v)))
		w(enc.EncodeString(keyID))
		w(enc.EncodeString(e.ID))
		if e.NodeID != "" {
			w(enc.EncodeString(keyNodeID))
			w(enc.EncodeString(e.NodeID))
		}
		w(enc.EncodeString(keyNodeType))
		w(enc.EncodeString(e.NodeType))
		if e.CorrelationID != "" {
			w(enc.EncodeString(keyCorrelationID))
			w(enc.EncodeString(e.CorrelationID))
		}
		if e.Payload != nil {
			w(enc.EncodeString(keyPayload))
			if e.PayloadEncoding == PayloadMsgpack {
				_, err := buf.Write(e.Payload)
				w(err)
			} else {
				w(enc.EncodeBytes(e.Payload))
			}
		}
		if len(e.Params) > 0 {
			w(enc.EncodeString(keyParams))
			enc.SetSortMapKeys(true)
			w(enc.Encode(map[string]any(e.Params)))
		}
		if !e.CreatedAt.IsZero() {
			w(enc.EncodeString(keyCreatedAt))
			w(enc.EncodeInt(e.CreatedAt.UnixMilli()))
		}
		if !e.Deadline.IsZero() {
			w(enc.EncodeString(keyDeadline))
			w(enc.EncodeInt(e.Deadline.UnixMilli()))
		}
		if e.ReplyTo != "" {
			w(enc.EncodeString(keyReplyTo))
			w(enc.EncodeString(e.ReplyTo))
		}
	}()
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeMsgpack reads a msgpack envelope. Unknown keys are skipped so that
// newer producers can add fields. On a field error the envelope read so far
// is returned with the error, so that its id and reply subject can still be
// used to report the failure. The bytes are checked with CheckMsgpack
// before anything is decoded, and a panic of the msgpack library becomes a
// *FormatError.
func DecodeMsgpack(data []byte) (_ *Envelope, err error) {
	bad := func(field, format string, args ...any) error {
		return &FormatError{Format: "msgpack", Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	// The fuzzer has found no panic in the calls below, but msgpack/v5 has
	// panicked on other hostile values (see UnmarshalMsgpack): a task that
	// makes it panic is malformed, not a reason to stop the consumer.
	defer func() {
		if p := recover(); p != nil {
			err = bad("", "the msgpack decoder failed on this message: %v", p)
		}
	}()
	if len(data) == 0 {
		return nil, bad("", "empty message")
	}
	if code := data[0]; !msgpcode.IsFixedMap(code) && code != msgpcode.Map16 && code != msgpcode.Map32 {
		return nil, bad("", "the envelope must be a map, found type byte 0x%02x (is this JSON without Content-Type: application/json?)", code)
	}
	n, err := CheckMsgpack(data)
	if err != nil {
		return nil, bad("", "%v", err)
	}
	if n != len(data) {
		return nil, bad("", "%d trailing bytes after the envelope map", len(data)-n)
	}
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	n, err = dec.DecodeMapLen()
	if err != nil {
		return nil, bad("", "%v", err)
	}
	if n > 64 {
		return nil, bad("", "map of %d keys; an envelope has at most a few dozen", n)
	}
	e := &Envelope{}
	paramValues := 0 // over every params key: a msgpack map may repeat a key
	// A refused params is reported after the other fields are read, so
	// that the failure can still be sent to the task's reply subject.
	var paramsErr error
	str := func(field string, dst *string) error {
		s, err := dec.DecodeString()
		if err != nil {
			return bad(field, "want a string: %v", err)
		}
		*dst = s
		return nil
	}
	for i := 0; i < n; i++ {
		key, err := dec.DecodeString()
		if err != nil {
			return e, bad("", "map key %d: want a string: %v", i, err)
		}
		switch key {
		case keyVersion:
			v, err := dec.DecodeInt64()
			if err != nil {
				return e, bad(key, "want an integer: %v", err)
			}
			if v < 0 || v > 1<<20 {
				return e, bad(key, "version %d out of range", v)
			}
			e.Version = int(v)
		case keyID:
			err = str(key, &e.ID)
		case keyNodeID:
			err = str(key, &e.NodeID)
		case keyNodeType:
			err = str(key, &e.NodeType)
		case keyCorrelationID:
			err = str(key, &e.CorrelationID)
		case keyReplyTo:
			err = str(key, &e.ReplyTo)
		case keyPayload:
			code, perr := dec.PeekCode()
			if perr != nil {
				return e, bad(key, "%v", perr)
			}
			switch {
			case code == msgpcode.Nil:
				err = dec.DecodeNil()
			case msgpcode.IsBin(code) || msgpcode.IsString(code):
				e.Payload, err = dec.DecodeBytes()
				if e.Payload == nil {
					e.Payload = []byte{}
				}
				e.PayloadEncoding = PayloadBytes
			default:
				var raw msgpack.RawMessage
				raw, err = dec.DecodeRaw()
				e.Payload, e.PayloadEncoding = raw, PayloadMsgpack
			}
			if err != nil {
				return e, bad(key, "%v", err)
			}
		case keyParams:
			// Count before decoding: see MaxParamValues. The whole
			// envelope has been walked, so this walk cannot fail.
			if _, werr := walkMsgpack(data[len(data)-r.Len():], &paramValues); werr != nil {
				return e, bad(key, "%v", werr)
			}
			if paramValues > MaxParamValues {
				paramsErr = bad(key, "%s", paramsTooMany(paramValues))
				e.Params = nil
				if err := dec.Skip(); err != nil {
					return e, paramsErr
				}
				continue
			}
			v, derr := dec.DecodeInterface()
			if derr != nil {
				return e, bad(key, "%v", derr)
			}
			if v != nil {
				m, ok := v.(map[string]any)
				if !ok {
					return e, bad(key, "want a map with string keys, found %T", v)
				}
				e.Params = m
			}
		case keyCreatedAt, keyDeadline:
			t, terr := decodeMsgpackTime(dec)
			if terr != nil {
				return e, bad(key, "%v", terr)
			}
			if key == keyCreatedAt {
				e.CreatedAt = t
			} else {
				e.Deadline = t
			}
		default:
			if err := dec.Skip(); err != nil {
				return e, bad(key, "%v", err)
			}
		}
		if err != nil {
			var fe *FormatError
			if errors.As(err, &fe) {
				return e, err
			}
			return e, bad(key, "%v", err)
		}
	}
	if e.Version == 0 {
		e.Version = Version
	}
	return e, paramsErr
}

// decodeMsgpackTime accepts integer Unix milliseconds, an RFC 3339 string or
// a msgpack timestamp extension.
func decodeMsgpackTime(dec *msgpack.Decoder) (time.Time, error) {
	code, err := dec.PeekCode()
	if err != nil {
		return time.Time{}, err
	}
	switch {
	case code == msgpcode.Nil:
		return time.Time{}, dec.DecodeNil()
	case msgpcode.IsString(code):
		s, err := dec.DecodeString()
		if err != nil {
			return time.Time{}, err
		}
		return parseTimeString(s)
	case msgpcode.IsExt(code):
		return dec.DecodeTime()
	case code == msgpcode.Float || code == msgpcode.Double:
		return time.Time{}, fmt.Errorf("want integer Unix milliseconds, RFC 3339 string or timestamp, found a float")
	default:
		ms, err := dec.DecodeInt64()
		if err != nil {
			return time.Time{}, fmt.Errorf("want integer Unix milliseconds, RFC 3339 string or timestamp: %v", err)
		}
		return time.UnixMilli(ms).UTC(), nil
	}
}

func parseTimeString(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time like 2026-01-02T15:04:05Z", s)
	}
	return t, nil
}

// jsonEnvelope mirrors the documented JSON form.
type jsonEnvelope struct {
	V             *int            `json:"v,omitempty"`
	ID            string          `json:"id"`
	NodeID        string          `json:"node_id,omitempty"`
	NodeType      string          `json:"node_type"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	Params        map[string]any  `json:"params,omitempty"`
	CreatedAt     jsonTime        `json:"created_at,omitzero"`
	Deadline      jsonTime        `json:"deadline,omitzero"`
	ReplyTo       string          `json:"reply_to,omitempty"`
}

// jsonTime reads RFC 3339 strings or Unix milliseconds and writes RFC 3339.
type jsonTime struct{ time.Time }

func (t jsonTime) IsZero() bool { return t.Time.IsZero() }

func (t jsonTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

func (t *jsonTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		tt, err := parseTimeString(s)
		t.Time = tt
		return err
	}
	var ms int64
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("want an RFC 3339 string or integer Unix milliseconds, found %s", b)
	}
	t.Time = time.UnixMilli(ms).UTC()
	return nil
}

// DecodeJSON reads a JSON envelope. The payload may be any JSON value; the
// executor receives its JSON text. Keys are matched exactly, as in msgpack:
// a key that differs from a field's only in case, or a key given twice, is
// an error rather than a guess. The message must be valid UTF-8: a JSON
// decoder would otherwise replace bad bytes and run a different task than
// the one published. On a field error the envelope read so far is returned
// with the error.
func DecodeJSON(data []byte) (*Envelope, error) {
	bad := func(field, msg string) error {
		return &FormatError{Format: "json", Field: field, Msg: msg}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, bad("", "empty message")
	}
	if trimmed[0] != '{' {
		return nil, bad("", "the envelope must be a JSON object")
	}
	if !utf8.Valid(data) {
		return nil, bad("", fmt.Sprintf("not valid UTF-8 (first bad byte at offset %d)", firstInvalidUTF8(data)))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	e := &Envelope{Version: Version}
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil, bad("", err.Error())
	}
	seen := make(map[string]bool, 10)
	var paramsErr error
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return e, bad("", err.Error())
		}
		key := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return e, bad(key, err.Error())
		}
		if !jsonKeys[key] {
			for k := range jsonKeys {
				if strings.EqualFold(k, key) {
					return e, bad(key, fmt.Sprintf("unknown key; keys are case-sensitive: did you mean %q?", k))
				}
			}
			continue // a newer producer's field
		}
		if seen[key] {
			return e, bad(key, "given twice")
		}
		seen[key] = true
		if err := e.setJSONField(key, raw); err != nil {
			var many *tooManyParams
			if !errors.As(err, &many) {
				return e, bad(key, err.Error())
			}
			// Reported after the other fields are read, so that the
			// failure can still be sent to the task's reply subject.
			paramsErr = bad(key, err.Error())
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return e, bad("", err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return e, bad("", "trailing data after the envelope object")
	}
	return e, paramsErr
}

// jsonKeys are the envelope's JSON keys.
var jsonKeys = map[string]bool{keyVersion: true, keyID: true, keyNodeID: true, keyNodeType: true, keyCorrelationID: true,
	keyPayload: true, keyParams: true, keyCreatedAt: true, keyDeadline: true, keyReplyTo: true}

// setJSONField decodes one envelope field from its raw JSON value.
func (e *Envelope) setJSONField(key string, raw json.RawMessage) error {
	null := string(raw) == "null"
	str := func(dst *string) error {
		if null {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("want a string, found %s", jsonKind(raw))
		}
		return nil
	}
	switch key {
	case keyVersion:
		if null {
			return nil
		}
		var v int
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("want an integer, found %s", jsonKind(raw))
		}
		e.Version = v
	case keyID:
		return str(&e.ID)
	case keyNodeID:
		return str(&e.NodeID)
	case keyNodeType:
		return str(&e.NodeType)
	case keyCorrelationID:
		return str(&e.CorrelationID)
	case keyReplyTo:
		return str(&e.ReplyTo)
	case keyPayload:
		if !null {
			e.Payload, e.PayloadEncoding = []byte(raw), PayloadJSON
		}
	case keyParams:
		if null {
			return nil
		}
		if n := countJSONValues(raw); n > MaxParamValues { // before decoding: see MaxParamValues
			return &tooManyParams{n}
		}
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			return fmt.Errorf("want an object, found %s", jsonKind(raw))
		}
		e.Params = m
	case keyCreatedAt, keyDeadline:
		var t jsonTime
		if err := t.UnmarshalJSON(raw); err != nil {
			return err
		}
		if key == keyCreatedAt {
			e.CreatedAt = t.Time
		} else {
			e.Deadline = t.Time
		}
	}
	return nil
}

// tooManyParams refuses params over MaxParamValues.
type tooManyParams struct{ n int }

func (t *tooManyParams) Error() string { return paramsTooMany(t.n) }

// countJSONValues counts the values in valid JSON text as MaxParamValues
// does: every literal, string, array and object, and every object key.
func countJSONValues(b []byte) int {
	n, inLiteral := 0, false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			n, inLiteral = n+1, false
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++ // the escaped byte, which may be a quote
				}
			}
		case '{', '[':
			n, inLiteral = n+1, false
		case '}', ']', ',', ':', ' ', '\t', '\n', '\r':
			inLiteral = false
		default: // a byte of a number, true, false or null
			if !inLiteral {
				n, inLiteral = n+1, true
			}
		}
	}
	return n
}

// jsonKind names the type of a raw JSON value for error messages.
func jsonKind(raw json.RawMessage) string {
	switch c := raw[0]; {
	case c == '"':
		return "a JSON string"
	case c == '{':
		return "a JSON object"
	case c == '[':
		return "a JSON array"
	case c == 't' || c == 'f':
		return "a JSON bool"
	case c == 'n':
		return "null"
	default:
		return "a JSON number"
	}
}

// firstInvalidUTF8 returns the offset of the first byte that is not part of
// a valid UTF-8 sequence.
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// EncodeJSON writes e in the documented JSON form. A payload that is not a
// JSON value is written as a JSON string of its bytes, which must then be UTF-8.
func EncodeJSON(e *Envelope) ([]byte, error) {
	v := e.Version
	if v == 0 {
		v = Version
	}
	j := jsonEnvelope{
		V: &v, ID: e.ID, NodeID: e.NodeID, NodeType: e.NodeType, CorrelationID: e.CorrelationID,
		Params: e.Params, CreatedAt: jsonTime{e.CreatedAt}, Deadline: jsonTime{e.Deadline}, ReplyTo: e.ReplyTo,
	}
	if e.Payload != nil {
		if json.Valid(e.Payload) {
			j.Payload = e.Payload
		} else {
			b, err := json.Marshal(string(e.Payload))
			if err != nil {
				return nil, err
			}
			j.Payload = b
		}
	}
	return json.Marshal(j)
}
