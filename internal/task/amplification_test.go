package task

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hostileSize is the largest task the consumer accepts with the default
// max_payload of 1 MiB (dlq.MaxTaskSize(1 << 20)): the size of the hostile
// envelopes below.
const hostileSize = 992 << 10

// The bound on what decoding a task retains, stated in docs/wire-format.md:
// retainK × the task's size + retainC. retainC covers MaxParamValues of the
// costliest value (about 130 bytes each); retainK the bytes of strings and
// of the payload, each copied once, and their headers.
//
// What it allocates on the way, garbage included, is bounded more loosely
// by allocK × size + allocC: JSON is read through buffers that grow by
// doubling, and a field's raw text is copied before it is decoded.
const (
	retainK = 2
	retainC = 3 << 19 // 1.5 MiB
	allocK  = 8
	allocC  = 2 << 20
)

type hostileShape struct {
	name, format string
	data         []byte
	refused      bool // params hold more than MaxParamValues values
	small        bool // not near hostileSize: params at the cap, no payload
}

// mpEnvelope returns a msgpack envelope {id: "t", node_type: "echo",
// params: p} and, with pad, a binary payload of zeros before params that
// brings it to hostileSize bytes.
func mpEnvelope(p []byte, pad bool) []byte {
	b := []byte{0x83, 0xa2, 'i', 'd', 0xa1, 't', 0xa9, 'n', 'o', 'd', 'e', '_', 't', 'y', 'p', 'e', 0xa4, 'e', 'c', 'h', 'o'}
	if pad {
		b[0] = 0x84
		b = append(b, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc6, 0, 0, 0, 0)
		n := hostileSize - len(b) - 7 - len(p)
		binary.BigEndian.PutUint32(b[len(b)-4:], uint32(n))
		b = append(b, make([]byte, n)...)
	}
	b = append(b, 0xa6, 'p', 'a', 'r', 'a', 'm', 's')
	return append(b, p...)
}

// mpParams returns the params value {"a": [elem × n]}.
func mpParams(elem []byte, n int) []byte {
	b := []byte{0x81, 0xa1, 'a', 0xdd, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], uint32(n))
	return append(b, bytes.Repeat(elem, n)...)
}

// jsEnvelope is mpEnvelope in JSON; the payload pad is a string of 'x'.
func jsEnvelope(p string, pad bool) []byte {
	const head = `{"id":"t","node_type":"echo",`
	b := head
	if pad {
		b += `"payload":"` + strings.Repeat("x", hostileSize-len(head)-len(`"payload":"",`)-len(`"params":}`)-len(p)) + `",`
	}
	return []byte(b + `"params":` + p + `}`)
}

// jsonParams returns the params value {"a":[elem,elem,...]}, n elems.
func jsonParams(elem string, n int) string {
	return `{"a":[` + strings.Repeat(elem+",", n-1) + elem + `]}`
}

func mpValues(elem []byte) int {
	n := 0
	if _, err := walkMsgpack(elem, &n); err != nil {
		panic(err)
	}
	return n
}

// hostileShapes are tasks of hostileSize bytes (give or take a few) made of
// the values that cost the most memory per byte when decoded. For each kind
// of value there are two tasks: one made of nothing else (the consumer
// accepted these before MaxParamValues, and now refuses them), and one
// whose params hold as many of them as MaxParamValues allows, with a
// payload making up the size: the worst task still accepted.
func hostileShapes() []hostileShape {
	// 256 distinct one-byte keys, each with an empty map: map16, then a1 k 80.
	keys := []byte{0xde, 0x01, 0x00}
	for k := range 256 {
		keys = append(keys, 0xa1, byte(k), 0x80)
	}
	// Chains of one-element arrays as deep as the depth limit allows: the
	// envelope, params and "a" take three levels.
	chain := func(levels int) []byte { return append(bytes.Repeat([]byte{0x91}, levels), 0x90) }
	jsonChain := func(levels int) string { return strings.Repeat("[", levels) + strings.Repeat("]", levels) }
	var jkeys strings.Builder
	jkeys.WriteString("{")
	for k := byte('#'); k <= '~'; k++ {
		if k == '\\' {
			continue
		}
		if k != '#' {
			jkeys.WriteString(",")
		}
		fmt.Fprintf(&jkeys, `"%c":{}`, k)
	}
	jkeys.WriteString("}")
	var shapes []hostileShape
	fill := hostileSize - len(mpEnvelope(mpParams(nil, 0), false))
	mp := func(name string, elem, capElem []byte) {
		shapes = append(shapes,
			hostileShape{name, "msgpack", mpEnvelope(mpParams(elem, fill/len(elem)), false), true, false},
			hostileShape{name + ", at the cap", "msgpack", mpEnvelope(mpParams(capElem, (MaxParamValues-3)/mpValues(capElem)), true), false, false})
	}
	worst := []byte{0x81, 0xa0, 0x80} // the costliest value per byte
	shapes = append(shapes, hostileShape{name: `one-entry maps {"": {}}, at the cap, no payload`, format: "msgpack",
		data: mpEnvelope(mpParams(worst, (MaxParamValues-3)/3), false), small: true})
	mp("empty maps", []byte{0x80}, []byte{0x80})
	mp("empty arrays", []byte{0x90}, []byte{0x90})
	mp("nils", []byte{0xc0}, []byte{0xc0})
	mp(`one-entry maps {"": {}}`, worst, worst)
	mp("maps of 256 one-byte keys, empty-map values", keys, keys)
	mp("deep nesting", chain(MaxMsgpackDepth-3), chain(MaxParamValues-4))
	mp("one-byte strings", []byte{0xa1, 'x'}, []byte{0xa1, 'x'})
	mp("fixints", []byte{0x07}, []byte{0x07})
	// One key repeated: the map's declared length sizes it, not its keys.
	repeated := func(n int) []byte {
		b := []byte{0x81, 0xa1, 'a', 0xdf, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[4:], uint32(n))
		return append(b, bytes.Repeat([]byte{0xa1, 'a', 0x80}, n)...)
	}
	shapes = append(shapes,
		hostileShape{"one key repeated", "msgpack", mpEnvelope(repeated(fill/3), false), true, false},
		hostileShape{"one key repeated, at the cap", "msgpack", mpEnvelope(repeated((MaxParamValues-3)/2), true), false, false})
	// Strings as short as a task of this size can have with params at the cap.
	str := make([]byte, fill/(MaxParamValues-3))
	str[0], str[1] = 0xd9, byte(len(str)-2)
	shapes = append(shapes, hostileShape{fmt.Sprintf("%d-byte strings", len(str)-2), "msgpack", mpEnvelope(mpParams(str, MaxParamValues-3), false), false, false})

	jfill := hostileSize - len(jsEnvelope(jsonParams("", 1), false))
	js := func(name, elem, capElem string) {
		shapes = append(shapes,
			hostileShape{name, "json", jsEnvelope(jsonParams(elem, jfill/(len(elem)+1)), false), true, false},
			hostileShape{name + ", at the cap", "json", jsEnvelope(jsonParams(capElem, (MaxParamValues-3)/countJSONValues([]byte(capElem))), true), false, false})
	}
	shapes = append(shapes, hostileShape{name: `one-entry objects {"": {}}, at the cap, no payload`, format: "json",
		data: jsEnvelope(jsonParams(`{"":{}}`, (MaxParamValues-3)/3), false), small: true})
	js("empty objects", "{}", "{}")
	js("empty arrays", "[]", "[]")
	js("nulls", "null", "null")
	js(`one-entry objects {"": {}}`, `{"":{}}`, `{"":{}}`)
	js("objects of 91 one-byte keys, empty-object values", jkeys.String(), jkeys.String())
	js("deep nesting", jsonChain(10000-3), jsonChain(MaxParamValues-3))
	js("one-byte strings", `"x"`, `"x"`)
	js("one-digit numbers", "7", "7")
	jstr := `"` + strings.Repeat("s", jfill/(MaxParamValues-3)-3) + `"`
	shapes = append(shapes, hostileShape{fmt.Sprintf("%d-byte strings", len(jstr)-2), "json", jsEnvelope(jsonParams(jstr, MaxParamValues-3), false), false, false})
	// One long string, and a payload with no params: not hostile, the
	// costliest ordinary tasks.
	long := append([]byte{0xdb, 0, 0, 0, 0}, bytes.Repeat([]byte{'s'}, fill-5)...)
	binary.BigEndian.PutUint32(long[1:], uint32(fill-5))
	jlong := `"` + strings.Repeat(`\u00e9`, (jfill-2)/6) + `"`
	shapes = append(shapes,
		hostileShape{"one long string", "msgpack", mpEnvelope(mpParams(long, 1), false), false, false},
		hostileShape{"payload only", "msgpack", mpEnvelope([]byte{0xc0}, true), false, false},
		hostileShape{`one long string of \u00e9 escapes`, "json", jsEnvelope(jsonParams(jlong, 1), false), false, false},
		hostileShape{"payload only", "json", jsEnvelope("null", true), false, false})
	return shapes
}

func (s hostileShape) decode() (*Envelope, error) {
	if s.format == "json" {
		return DecodeJSON(s.data)
	}
	return DecodeMsgpack(s.data)
}

// decodeCost decodes s once and returns the bytes it allocated and the
// bytes still held after a collection while the envelope is kept.
func decodeCost(decode func() (*Envelope, error)) (alloc, retained int64, env *Envelope, err error) {
	var before, after, held runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	env, err = decode()
	runtime.ReadMemStats(&after)
	runtime.GC()
	runtime.ReadMemStats(&held)
	runtime.KeepAlive(env)
	return int64(after.TotalAlloc - before.TotalAlloc), int64(held.HeapAlloc) - int64(before.HeapAlloc), env, err
}

// TestDecodeMemoryBound decodes the hostile tasks and checks that each
// retains at most retainK × its size + retainC while its envelope is kept,
// that those with too many params values are refused as a field error that
// keeps the task id, and the others accepted. Before MaxParamValues the
// worst of them retained 133 times its size.
func TestDecodeMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes 42 tasks of up to 992 KiB")
	}
	t.Logf("| shape | task size | allocated | retained | retained / size |")
	for _, s := range hostileShapes() {
		if len(s.data) > hostileSize || !s.small && len(s.data) < hostileSize-24<<10 {
			t.Fatalf("%s %s: %d bytes, want %d or a little less", s.format, s.name, len(s.data), hostileSize)
		}
		alloc, retained, env, err := decodeCost(s.decode)
		t.Logf("| %s %s | %d | %d | %d | %.2f |", s.format, s.name, len(s.data), alloc, retained, float64(retained)/float64(len(s.data)))
		if limit := retainK*int64(len(s.data)) + retainC; retained > limit {
			t.Errorf("%s %s: decoding %d bytes retained %d bytes, more than %d × size + %d = %d",
				s.format, s.name, len(s.data), retained, retainK, retainC, limit)
		}
		if limit := allocK*int64(len(s.data)) + allocC; alloc > limit {
			t.Errorf("%s %s: decoding %d bytes allocated %d bytes, more than %d × size + %d = %d",
				s.format, s.name, len(s.data), alloc, allocK, allocC, limit)
		}
		var fe *FormatError
		switch {
		case !s.refused && err != nil:
			t.Errorf("%s %s: %v", s.format, s.name, err)
		case s.refused && (!errors.As(err, &fe) || fe.Field != "params" || !strings.Contains(fe.Msg, fmt.Sprintf("the limit is %d: put bulk data in payload", MaxParamValues))):
			t.Errorf("%s %s: want a params error, got %v", s.format, s.name, err)
		case s.refused && (env == nil || env.ID != "t"):
			t.Errorf("%s %s: the refused task's id is lost: %+v", s.format, s.name, env)
		}
	}
}

// BenchmarkDecodeHostile decodes each hostile task. B/op is what one decode
// allocates; retained-B/op what it holds after a collection while its
// envelope is kept, and retained/size that as a multiple of the task.
func BenchmarkDecodeHostile(b *testing.B) {
	for _, s := range hostileShapes() {
		b.Run(s.format+"/"+strings.NewReplacer(" ", "_", `"`, "", ",", "").Replace(s.name), func(b *testing.B) {
			_, retained, _, _ := decodeCost(s.decode)
			b.ReportAllocs()
			b.SetBytes(int64(len(s.data)))
			for b.Loop() {
				_, _ = s.decode()
			}
			b.ReportMetric(float64(retained), "retained-B/op")
			b.ReportMetric(float64(retained)/float64(len(s.data)), "retained/size")
		})
	}
}

// TestMaxParamValues checks the cap's edge in both encodings, that honest
// params pass, and that a msgpack envelope cannot get past the cap by
// giving params twice.
func TestMaxParamValues(t *testing.T) {
	nums := func(n int) []any {
		a := make([]any, n)
		for i := range a {
			a[i] = float64(i) + 0.5
		}
		return a
	}
	honest := Params{"vector": nums(4096), "weights": nums(2048), "mode": "fit", "nested": map[string]any{"a": []any{1, "b", nil, true}}}
	for i := range 48 {
		honest[fmt.Sprintf("key_%d", i)] = i
	}
	cases := []struct {
		name   string
		params Params
		values int // 0: accepted
	}{
		{"honest", honest, 0},
		{"at the cap", Params{"a": nums(MaxParamValues - 3)}, 0},
		{"one over", Params{"a": nums(MaxParamValues - 2)}, MaxParamValues + 1},
	}
	for _, c := range cases {
		// reply_to and deadline come after params on the wire.
		env := &Envelope{ID: "t", NodeType: "echo", Params: c.params, ReplyTo: "_INBOX.r", Deadline: time.UnixMilli(1e12).UTC()}
		mp, err := EncodeMsgpack(env)
		if err != nil {
			t.Fatal(err)
		}
		js, err := EncodeJSON(env)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []struct {
			format string
			data   []byte
			ct     string
		}{{"msgpack", mp, ContentTypeMsgpack}, {"json", js, ContentTypeJSON}} {
			got, err := Decode(d.data, d.ct)
			if c.values == 0 {
				if err != nil || len(got.Params) != len(c.params) {
					t.Errorf("%s %s: %v", c.name, d.format, err)
				}
				continue
			}
			var fe *FormatError
			want := fmt.Sprintf("params hold %d values; the limit is %d: put bulk data in payload", c.values, MaxParamValues)
			if !errors.As(err, &fe) || fe.Format != d.format || fe.Field != "params" || fe.Msg != want {
				t.Errorf("%s %s: got %v, want %q", c.name, d.format, err, want)
			}
			if got == nil || got.ID != "t" {
				t.Errorf("%s %s: the refused task's id is lost: %+v", c.name, d.format, got)
			}
			// The fields after params are still read, so the failure can reach the waiter.
			if got != nil && (got.ReplyTo != "_INBOX.r" || !got.Deadline.Equal(env.Deadline) || got.Params != nil) {
				t.Errorf("%s %s: reply_to %q, deadline %v, params %d after a refused params; want the reply subject, the deadline, no params",
					c.name, d.format, got.ReplyTo, got.Deadline, len(got.Params))
			}
		}
	}

	// msgpack takes the last of a repeated key, so a repeated params key
	// counts against the same cap.
	half := mpParams([]byte{0x07}, MaxParamValues/2)
	twice := append(append(mpEnvelope(half, false), 0xa6, 'p', 'a', 'r', 'a', 'm', 's'), half...)
	twice[0]++
	want := fmt.Sprintf("params hold %d values", 2*(MaxParamValues/2+3))
	if _, err := DecodeMsgpack(twice); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("params given twice: got %v, want %q", err, want)
	}
	if _, err := DecodeMsgpack(mpEnvelope(half, false)); err != nil {
		t.Errorf("params given once: %v", err)
	}
}

// TestCountParamValues checks that both encodings count a value the same.
func TestCountParamValues(t *testing.T) {
	const js = `{"s":"a\"b\\","n":-1.5e3,"t":true,"f":false,"z":null,"arr":[1,[2,{}],"x"],"o":{"k":{"k2":[]}},"u":"é\u2028 ,:[{"}`
	const want = 26
	if n := countJSONValues([]byte(js)); n != want {
		t.Errorf("JSON: %d values, want %d", n, want)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(js), "", "\t"); err != nil {
		t.Fatal(err)
	}
	if n := countJSONValues(indented.Bytes()); n != want {
		t.Errorf("indented JSON: %d values, want %d", n, want)
	}
	env, err := DecodeJSON([]byte(`{"id":"t","node_type":"echo","params":` + js + `}`))
	if err != nil {
		t.Fatal(err)
	}
	mp, err := EncodeMsgpack(env)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if _, err := walkMsgpack(mp, &n); err != nil {
		t.Fatal(err)
	}
	if n -= 1 + 4 + 3; n != want { // the envelope map, its 4 keys, and the values of v, id and node_type
		t.Errorf("msgpack: %d values, want %d", n, want)
	}
}

// FuzzCountJSONValues compares countJSONValues on valid JSON with a count
// of the tokens encoding/json reads (closing brackets are not values).
func FuzzCountJSONValues(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `0`, `"a\"\\"`, `{"a":[1,-2.5e-3,true,false,null,{"b":""}]}`, " [ 1 , \"x\" ] ", `"\u005c"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		want := 0
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // a number too large for a float64 is still one value
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			if d, ok := tok.(json.Delim); !ok || d == '{' || d == '[' {
				want++
			}
		}
		if got := countJSONValues(data); got != want {
			t.Fatalf("countJSONValues(%q) = %d, want %d", data, got, want)
		}
	})
}

// TestDecodeResultMemoryBound checks DecodeResult on hostile results (the
// producer's --wait decodes whatever arrives on its inbox): it decodes into
// fixed fields and skips unknown keys, so it needs no cap, and retains at
// most retainK × the result's size + 64 KiB.
func TestDecodeResultMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes results of 992 KiB")
	}
	mpHead := []byte{0x83, 0xa7, 't', 'a', 's', 'k', '_', 'i', 'd', 0xa1, 't', 0xa9, 'n', 'o', 'd', 'e', '_', 't', 'y', 'p', 'e', 0xa4, 'e', 'c', 'h', 'o'}
	mpResult := func(key string, value []byte) []byte {
		return append(append(append(bytes.Clone(mpHead), 0xa0|byte(len(key))), key...), value...)
	}
	fill := hostileSize - len(mpResult("unknown", nil)) - 5
	emptyMaps := append([]byte{0xdd, 0, 0, 0, 0}, bytes.Repeat([]byte{0x80}, fill)...)
	binary.BigEndian.PutUint32(emptyMaps[1:], uint32(fill))
	output := append([]byte{0xc6, 0, 0, 0, 0}, make([]byte, fill)...)
	binary.BigEndian.PutUint32(output[1:], uint32(fill))
	workers := []byte{0xdf, 0, 0, 0, 0} // one key, again and again
	n := (hostileSize - 5) / 9
	binary.BigEndian.PutUint32(workers[1:], uint32(n))
	workers = append(workers, bytes.Repeat([]byte{0xa6, 'w', 'o', 'r', 'k', 'e', 'r', 0xa1, 'w'}, n)...)
	const jsHead = `{"task_id":"t","node_type":"echo",`
	jfill := hostileSize - len(jsHead) - 20
	cases := []struct {
		name, ct string
		data     []byte
	}{
		{"msgpack, unknown key holding empty maps", ContentTypeMsgpack, mpResult("unknown", emptyMaps)},
		{"msgpack, output of 992 KiB", ContentTypeMsgpack, mpResult("output", output)},
		{"msgpack, one key repeated", ContentTypeMsgpack, workers},
		{"json, unknown key holding empty objects", ContentTypeJSON, []byte(jsHead + `"unknown":[` + strings.Repeat("{},", jfill/3) + `{}]}`)},
		{"json, output of empty objects", ContentTypeJSON, []byte(jsHead + `"output":[` + strings.Repeat("{},", jfill/3) + `{}]}`)},
		{"json, one key repeated", ContentTypeJSON, []byte(`{` + strings.Repeat(`"worker":"w",`, jfill/13) + `"task_id":"t"}`)},
	}
	for _, c := range cases {
		if len(c.data) > hostileSize {
			t.Fatalf("%s: %d bytes", c.name, len(c.data))
		}
		var res *Result
		alloc, retained, _, err := decodeCost(func() (*Envelope, error) {
			var err error
			res, err = DecodeResult(c.data, c.ct)
			return nil, err
		})
		runtime.KeepAlive(res)
		t.Logf("| %s | %d | %d | %d | %.2f |", c.name, len(c.data), alloc, retained, float64(retained)/float64(len(c.data)))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if limit := retainK*int64(len(c.data)) + 64<<10; retained > limit {
			t.Errorf("%s: decoding %d bytes retained %d bytes, more than %d", c.name, len(c.data), retained, limit)
		}
	}
}
