package task

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to both envelope decoders: they must not
// panic, and whatever they accept must survive a round trip through the
// msgpack encoding.
func FuzzDecode(f *testing.F) {
	full, _ := EncodeMsgpack(fullEnvelope())
	minimal, _ := EncodeMsgpack(&Envelope{ID: "a", NodeType: "echo"})
	js, _ := EncodeJSON(fullEnvelope())
	for _, seed := range [][]byte{full, minimal, js, []byte(`{"id":"x","node_type":"echo","payload":[1,2,{"a":null}]}`),
		{0x81, 0xa2, 'i', 'd', 0xdb, 0x7f, 0xff, 0xff, 0xff}, {0xde, 0xff, 0xff}, {}, []byte("null")} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		ct := ContentTypeMsgpack
		if asJSON {
			ct = ContentTypeJSON
		}
		env, err := Decode(data, ct)
		if err != nil {
			return
		}
		if env.Validate() != nil {
			return
		}
		b, err := EncodeMsgpack(env)
		if err != nil {
			return // params of a type msgpack cannot write back (none known); not a decoder bug
		}
		again, err := DecodeMsgpack(b)
		if err != nil {
			t.Fatalf("re-decoding our own encoding failed: %v\ninput %x\nencoded %x", err, data, b)
		}
		if again.ID != env.ID || again.NodeType != env.NodeType || !bytes.Equal(again.Payload, env.Payload) {
			t.Fatalf("round trip changed the envelope: %+v -> %+v", env, again)
		}
	})
}
