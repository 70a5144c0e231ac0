package task

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// checkValues are encoded with the msgpack library to cover every type byte
// family: fix and sized ints, floats, strings, binaries, extensions
// (timestamps), arrays and maps of each size class.
func checkValues() []any {
	return []any{
		nil, true, false, 0, 1, -1, -33, 200, -200, 70000, -70000, 1 << 40, -(1 << 40), uint64(1 << 63),
		float32(1.5), 2.25, "", "hi", strings.Repeat("s", 40), strings.Repeat("s", 300), strings.Repeat("s", 70000),
		[]byte{}, []byte{1, 2}, bytes.Repeat([]byte{7}, 300), bytes.Repeat([]byte{7}, 70000),
		time.Unix(1, 0), time.Unix(1<<34, 5), time.Unix(1, 5),
		[]any{}, []any{1, "a", nil}, make([]any, 20), make([]any, 70000),
		map[string]any{}, map[string]any{"a": map[string]any{"b": []any{1.5, "c"}}},
		func() map[int]bool {
			m := map[int]bool{}
			for i := range 70000 {
				m[i] = true
			}
			return m
		}(),
	}
}

func TestCheckMsgpackAcceptsValidValues(t *testing.T) {
	for _, v := range checkValues() {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		n, err := CheckMsgpack(append(b, 0xc0, 0xc0)) // trailing bytes are not part of the value
		if err != nil || n != len(b) {
			t.Errorf("%T (% x...): n=%d want %d, err %v", v, b[:min(len(b), 8)], n, len(b), err)
		}
		// Every proper prefix is truncated and must be refused.
		for _, cut := range []int{0, 1, len(b) / 2, len(b) - 1} {
			if cut >= len(b) {
				continue
			}
			if _, err := CheckMsgpack(b[:cut]); err == nil {
				t.Errorf("%T cut to %d of %d bytes was accepted", v, cut, len(b))
			}
		}
	}
}

func TestCheckMsgpackRefuses(t *testing.T) {
	deep := func(levels int) []byte { return append(bytes.Repeat([]byte{0x91}, levels), 0xc0) }
	cases := []struct {
		name     string
		data     []byte
		contains string
	}{
		{"empty", nil, "ends at byte 0"},
		{"array claiming 4 billion elements", []byte{0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xf0}, "array at byte 3 declares 4294967280 elements but only 0 bytes follow"},
		{"map claiming 65535 entries", []byte{0xde, 0xff, 0xff, 0xc0, 0xc0}, "map at byte 0 declares 65535 entries but only 2 bytes follow"},
		{"string longer than the data", []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'}, "string at byte 0 declares 2147483647 bytes but only 1 follow"},
		{"binary longer than the data", []byte{0xc5, 0x01, 0x00, 1, 2}, "binary at byte 0 declares 256 bytes"},
		{"extension longer than the data", []byte{0xc7, 0x05, 0x01, 1}, "extension at byte 0 declares 6 bytes"},
		{"truncated length", []byte{0x92, 0xc0, 0xdc, 0x01}, "inside the length of the value at byte 2"},
		{"truncated number", []byte{0xcb, 0, 0}, "number at byte 0 needs 8 bytes but only 2 follow"},
		{"missing element", []byte{0x92, 0x91, 0x91, 0xc0}, "ends at byte 4"},
		{"reserved type byte", []byte{0x91, 0xc1}, "byte 1 is 0xc1"},
		{"too deep", deep(MaxMsgpackDepth + 1), "nests deeper than 10000 levels"},
		{"nested arrays each claiming the rest", []byte{0xdc, 0x00, 0x06, 0xdc, 0x00, 0x03, 0xc0, 0xc0, 0xc0}, "ends at byte 9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckMsgpack(c.data)
			if err == nil || !strings.Contains(err.Error(), c.contains) {
				t.Fatalf("got %v, want an error containing %q", err, c.contains)
			}
		})
	}
	if n, err := CheckMsgpack(deep(MaxMsgpackDepth)); err != nil || n != MaxMsgpackDepth+1 {
		t.Fatalf("nesting at the limit: n=%d err=%v", n, err)
	}
}

// FuzzCheckMsgpack compares CheckMsgpack with the msgpack library's Skip,
// which walks a value without allocating for it: on every input they agree
// on whether the first value is whole and on its length, except that the
// check also refuses nesting deeper than MaxMsgpackDepth.
func FuzzCheckMsgpack(f *testing.F) {
	for _, v := range checkValues()[:30] {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Add([]byte{0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xf0})
	f.Add([]byte{0x91, 0xc1})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := CheckMsgpack(data)
		r := bytes.NewReader(data)
		skipErr := msgpack.NewDecoder(r).Skip()
		if err != nil {
			if skipErr == nil && !strings.Contains(err.Error(), "nests deeper") && !strings.Contains(err.Error(), "0xc1") {
				t.Fatalf("check refused what msgpack skips: %v\ninput %x", err, data)
			}
			return
		}
		if skipErr != nil {
			t.Fatalf("check accepted %d bytes msgpack cannot skip: %v\ninput %x", n, skipErr, data)
		}
		if used := len(data) - r.Len(); used != n {
			t.Fatalf("check says %d bytes, msgpack skipped %d\ninput %x", n, used, data)
		}
	})
}

func TestUnmarshalMsgpack(t *testing.T) {
	var v struct {
		At time.Time `msgpack:"at"`
		N  []int     `msgpack:"n"`
	}
	// msgpack/v5 panics decoding nil into a time.Time field.
	if err := UnmarshalMsgpack([]byte("\x81\xa2at\xc0"), &v); err == nil || !strings.Contains(err.Error(), "decoder failed") {
		t.Fatalf("nil time: %v", err)
	}
	if err := UnmarshalMsgpack([]byte("\x81\xa1n\xdd\xff\xff\xff\xff"), &v); err == nil || !strings.Contains(err.Error(), "declares 4294967295 elements") {
		t.Fatalf("huge array: %v", err)
	}
	if err := UnmarshalMsgpack([]byte("\x82\xa2at\xd6\xff\x00\x00\x00\x01\xa1n\x92\x01\x02"), &v); err != nil || v.At.Unix() != 1 || len(v.N) != 2 {
		t.Fatalf("valid value: %v %+v", err, v)
	}
}
