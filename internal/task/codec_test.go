package task

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

var update = flag.Bool("update", false, "rewrite golden files")

func fullEnvelope() *Envelope {
	return &Envelope{
		Version:         1,
		ID:              "t-1",
		NodeID:          "n-1",
		NodeType:        "echo",
		CorrelationID:   "run-7",
		Payload:         []byte("hi"),
		PayloadEncoding: PayloadBytes,
		Params:          Params{"n": int8(2), "mode": "fast"},
		CreatedAt:       time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Deadline:        time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC),
		ReplyTo:         "_INBOX.r",
	}
}

func TestMsgpackGolden(t *testing.T) {
	got, err := EncodeMsgpack(fullEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "envelope_v1.msgpack")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("msgpack layout changed:\n got %x\nwant %x\n(run with -update only if the wire format change is intended and documented)", got, want)
	}
	dec, err := DecodeMsgpack(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dec, fullEnvelope()) {
		t.Fatalf("golden decodes to %+v", dec)
	}
}

// The byte-level example of docs/wire-format.md.
const docExampleHex = "84a17601a26964a274" + "31a96e6f64655f74797065a46563686fa77061796c6f6164c4026869"

func TestDocExample(t *testing.T) {
	b, err := EncodeMsgpack(&Envelope{ID: "t1", NodeType: "echo", Payload: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != docExampleHex {
		t.Fatalf("doc example bytes changed: %s", got)
	}
	doc, err := os.ReadFile("../../docs/wire-format.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ReplaceAll(string(doc), " ", ""), docExampleHex) {
		t.Fatal("docs/wire-format.md does not show the example's bytes")
	}
}

func TestRoundTrip(t *testing.T) {
	msgpackPayload, _ := msgpack.Marshal(map[string]any{"text": "hi"})
	cases := map[string]*Envelope{
		"full":            fullEnvelope(),
		"minimal":         {Version: 1, ID: "a", NodeType: "sleep"},
		"empty payload":   {Version: 1, ID: "a", NodeType: "echo", Payload: []byte{}},
		"msgpack payload": {Version: 1, ID: "a", NodeType: "echo", Payload: msgpackPayload, PayloadEncoding: PayloadMsgpack},
		"binary payload":  {Version: 1, ID: "a", NodeType: "echo", Payload: []byte{0, 1, 0xff, 0xc1}},
	}
	for name, in := range cases {
		t.Run(name+"/msgpack", func(t *testing.T) {
			b, err := EncodeMsgpack(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Decode(b, ContentTypeMsgpack)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(out, in) {
				t.Fatalf("got %+v\nwant %+v", out, in)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		in := fullEnvelope()
		in.Payload, in.PayloadEncoding = []byte(`{"text":"hi"}`), PayloadJSON
		b, err := EncodeJSON(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Decode(b, "application/json; charset=utf-8")
		if err != nil {
			t.Fatal(err)
		}
		if string(out.Payload) != `{"text":"hi"}` || out.PayloadEncoding != PayloadJSON {
			t.Fatalf("payload %q %v", out.Payload, out.PayloadEncoding)
		}
		if n, _, _ := out.Params.Int("n"); n != 2 || !out.CreatedAt.Equal(in.CreatedAt) || !out.Deadline.Equal(in.Deadline) ||
			out.ID != in.ID || out.NodeID != in.NodeID || out.CorrelationID != in.CorrelationID || out.ReplyTo != in.ReplyTo {
			t.Fatalf("got %+v", out)
		}
	})
}

func TestDecodeJSONByHand(t *testing.T) {
	// What someone types with the nats CLI: no version, time as Unix millis.
	env, err := DecodeJSON([]byte(`{"id":"x","node_type":"echo","payload":"hello","params":{"duration":"2s"},"created_at":1767225600000}`))
	if err != nil {
		t.Fatal(err)
	}
	if env.Version != 1 || string(env.Payload) != `"hello"` || !env.CreatedAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("%+v", env)
	}
	if d, _, _ := env.Params.Duration("duration"); d != 2*time.Second {
		t.Fatalf("duration %v", d)
	}
}

func TestMsgpackTimeForms(t *testing.T) {
	want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, v := range map[string]any{"millis": want.UnixMilli(), "rfc3339": "2026-01-01T00:00:00Z", "timestamp ext": want} {
		b, _ := msgpack.Marshal(map[string]any{"id": "a", "node_type": "echo", "created_at": v})
		env, err := DecodeMsgpack(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !env.CreatedAt.Equal(want) {
			t.Fatalf("%s: %v", name, env.CreatedAt)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	mp := func(v any) []byte {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.SetSortMapKeys(true) // the truncated case cuts inside "echo"
		_ = enc.Encode(v)
		return buf.Bytes()
	}
	good := mp(map[string]any{"id": "a", "node_type": "echo"})
	cases := []struct {
		name, ct string
		data     []byte
		field    string // "" means whole message
		contains string
	}{
		{"empty", "", nil, "", "empty message"},
		{"truncated", "", good[:len(good)-2], "", "declares 4 bytes but only 2 follow"},
		{"not a map", "", mp([]int{1, 2}), "", "must be a map"},
		{"json without content type", "", []byte(`{"id":"a"}`), "", "Content-Type"},
		{"id wrong type", "", mp(map[string]any{"id": 5, "node_type": "echo"}), "id", "want a string"},
		{"params not a map", "", mp(map[string]any{"id": "a", "node_type": "echo", "params": []int{1}}), "params", "map"},
		{"float time", "", mp(map[string]any{"id": "a", "node_type": "echo", "created_at": 1.5}), "created_at", "float"},
		{"bad time string", "", mp(map[string]any{"id": "a", "node_type": "echo", "deadline": "soon"}), "deadline", "RFC 3339"},
		{"trailing bytes", "", append(good, 0xc0), "", "trailing"},
		{"huge declared string", "", []byte{0x81, 0xa2, 'i', 'd', 0xdb, 0x7f, 0xff, 0xff, 0xff}, "", "declares 2147483647 bytes"},
		{"params array claiming 4 billion elements", "", []byte{0x83, 0xa2, 'i', 'd', 0xa1, 'a', 0xa9, 'n', 'o', 'd', 'e', '_', 't', 'y', 'p', 'e', 0xa4, 'e', 'c', 'h', 'o',
			0xa6, 'p', 'a', 'r', 'a', 'm', 's', 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xf0}, "", "declares 4294967280 elements"},
		{"payload nested too deep", "", append(append([]byte{0x83, 0xa2, 'i', 'd', 0xa1, 'a', 0xa9, 'n', 'o', 'd', 'e', '_', 't', 'y', 'p', 'e', 0xa4, 'e', 'c', 'h', 'o',
			0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd'}, bytes.Repeat([]byte{0x91}, MaxMsgpackDepth)...), 0xc0), "", "deeper than 10000"},
		{"json array", ContentTypeJSON, []byte(`[1]`), "", "JSON object"},
		{"json wrong type", ContentTypeJSON, []byte(`{"id":1,"node_type":"echo"}`), "id", "want a string"},
		{"json key in another case", ContentTypeJSON, []byte(`{"id":"a","Node_Type":"echo"}`), "Node_Type", `did you mean "node_type"`},
		{"json duplicate key", ContentTypeJSON, []byte(`{"id":"a","node_type":"echo","id":"b"}`), "id", "given twice"},
		{"json invalid utf-8", ContentTypeJSON, []byte("{\"id\":\"a\xff\xfe\",\"node_type\":\"echo\"}"), "", "not valid UTF-8 (first bad byte at offset 8)"},
		{"json params not an object", ContentTypeJSON, []byte(`{"id":"a","node_type":"echo","params":[1]}`), "params", "want an object"},
		{"json trailing", ContentTypeJSON, []byte(`{"id":"a","node_type":"echo"} {}`), "", "trailing"},
		{"json truncated", ContentTypeJSON, []byte(`{"id":"a","node_`), "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.data, c.ct)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("want *FormatError, got %v", err)
			}
			if (c.field != "?" && fe.Field != c.field) || !strings.Contains(err.Error(), c.contains) {
				t.Fatalf("field %q, error %q", fe.Field, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]struct {
		env   Envelope
		field string
	}{
		"ok":             {Envelope{ID: "a", NodeType: "echo"}, ""},
		"no id":          {Envelope{NodeType: "echo"}, "id"},
		"long id":        {Envelope{ID: strings.Repeat("x", 257), NodeType: "echo"}, "id"},
		"no node type":   {Envelope{ID: "a"}, "node_type"},
		"dotted type":    {Envelope{ID: "a", NodeType: "a.b"}, "node_type"},
		"wildcard type":  {Envelope{ID: "a", NodeType: "*"}, "node_type"},
		"future version": {Envelope{Version: 2, ID: "a", NodeType: "echo"}, "v"},
		"invalid utf-8":  {Envelope{ID: "a\xff", NodeType: "echo"}, "id"},
		"escape in id":   {Envelope{ID: "a\x1b[2J", NodeType: "echo"}, "id"},
		"newline in id":  {Envelope{ID: "a\r\nX-Injected: 1", NodeType: "echo"}, "id"},
		"NUL in node id": {Envelope{ID: "a", NodeID: "n\x00", NodeType: "echo"}, "node_id"},
		"C1 in corr id":  {Envelope{ID: "a", CorrelationID: "c\u009b", NodeType: "echo"}, "correlation_id"},
		"bidi in id":     {Envelope{ID: "invoice\u202egpj.exe", NodeType: "echo"}, "id"},
		"long node id":   {Envelope{ID: "a", NodeID: strings.Repeat("n", 257), NodeType: "echo"}, "node_id"},
		"long reply_to":  {Envelope{ID: "a", ReplyTo: "_INBOX." + strings.Repeat("r", 300), NodeType: "echo"}, "reply_to"},
		"unicode id ok":  {Envelope{ID: "tâche-ü", NodeType: "echo"}, ""},
	}
	for name, c := range cases {
		err := c.env.Validate()
		var fe *FormatError
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: want field %s, got %v", name, c.field, err)
		}
	}
}

func TestParams(t *testing.T) {
	p := Params{"i": int64(3), "u": uint8(4), "f": 2.5, "s": "7", "d": "150ms", "dm": 20, "bad": "x", "m": map[string]any{}}
	if v, ok, err := p.Int("i"); v != 3 || !ok || err != nil {
		t.Error("i", v, ok, err)
	}
	if v, _, _ := p.Int("u"); v != 4 {
		t.Error("u", v)
	}
	if _, _, err := p.Int("f"); err == nil {
		t.Error("2.5 accepted as an integer")
	}
	if v, _, _ := p.Int("s"); v != 7 {
		t.Error("s", v)
	}
	if d, _, _ := p.Duration("d"); d != 150*time.Millisecond {
		t.Error("d", d)
	}
	if d, _, _ := p.Duration("dm"); d != 20*time.Millisecond {
		t.Error("dm", d)
	}
	if _, _, err := p.Float("bad"); err == nil {
		t.Error("bad accepted")
	}
	if _, _, err := p.Float("m"); err == nil {
		t.Error("map accepted")
	}
	if _, ok, err := p.Float("missing"); ok || err != nil {
		t.Error("missing")
	}
}

func TestReadLines(t *testing.T) {
	in := "{\"node_type\":\"echo\",\"id\":\"a\"}\n\n  \nnot json\n{\"node_type\":\"sleep\"}\n"
	var ids []string
	var errLines []int
	for env, err := range ReadLines(strings.NewReader(in), 0) {
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatal(err)
			}
			errLines = append(errLines, le.Line)
			continue
		}
		ids = append(ids, env.NodeType)
	}
	if !reflect.DeepEqual(ids, []string{"echo", "sleep"}) || !reflect.DeepEqual(errLines, []int{4}) {
		t.Fatalf("ids %v, error lines %v", ids, errLines)
	}
}

func TestResultRoundTrip(t *testing.T) {
	r := &Result{TaskID: "a", NodeType: "echo", OK: true, Output: []byte(`{"x":1}`), Attempts: 1, Worker: "w"}
	for _, asJSON := range []bool{false, true} {
		b, err := EncodeResult(r, asJSON)
		if err != nil {
			t.Fatal(err)
		}
		ct := ContentTypeMsgpack
		if asJSON {
			ct = ContentTypeJSON
			if !strings.Contains(string(b), `"output":{"x":1}`) {
				t.Fatalf("JSON result does not embed JSON output: %s", b)
			}
		}
		got, err := DecodeResult(b, ct)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("json=%v: %+v", asJSON, got)
		}
	}
	bin := &Result{Version: 1, TaskID: "a", NodeType: "echo", OK: true, Output: []byte{0xff, 0}}
	b, _ := EncodeResult(bin, true)
	got, _ := DecodeResult(b, ContentTypeJSON)
	if !bytes.Equal(got.Output, bin.Output) {
		t.Fatalf("binary output through JSON: %x", got.Output)
	}
}

// A decode error keeps the fields read before it, so that the failure can
// still be reported to the task's reply subject under its id.
func TestDecodeErrorKeepsWhatWasRead(t *testing.T) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true) // id, node_type, reply_to, then the bad v
	_ = enc.Encode(map[string]any{"id": "t1", "node_type": "echo", "reply_to": "_INBOX.r", "v": "one"})
	cases := map[string]struct {
		data []byte
		ct   string
	}{
		"msgpack": {buf.Bytes(), ContentTypeMsgpack},
		"json":    {[]byte(`{"id":"t1","reply_to":"_INBOX.r","deadline":"soon"}`), ContentTypeJSON},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			env, err := Decode(c.data, c.ct)
			if err == nil {
				t.Fatal("decoded")
			}
			if env == nil || env.ID != "t1" || env.ReplyTo != "_INBOX.r" {
				t.Fatalf("partial envelope %+v", env)
			}
		})
	}
}
