package dlq

import (
	"strings"
	"testing"

	"github.com/nodeq/nodeq/internal/task"
)

// A record's payload is shown decoded only when decoding it is cheap: a
// payload of many tiny values (which would cost ~100x its size as Go
// values) is shown as it is.
func TestDisplayPayloadBounded(t *testing.T) {
	emptyMaps := func(n int) []byte {
		b := []byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} // array 32
		for range n {
			b = append(b, 0x80)
		}
		return b
	}
	cases := []struct {
		name    string
		env     *task.Envelope
		decoded bool
	}{
		{"small msgpack", &task.Envelope{Payload: emptyMaps(3), PayloadEncoding: task.PayloadMsgpack}, true},
		{"hostile msgpack", &task.Envelope{Payload: emptyMaps(200000), PayloadEncoding: task.PayloadMsgpack}, false},
		{"small json", &task.Envelope{Payload: []byte(`[{},{}]`), PayloadEncoding: task.PayloadJSON}, true},
		{"hostile json", &task.Envelope{Payload: []byte("[" + strings.Repeat("{},", 200000) + "{}]"), PayloadEncoding: task.PayloadJSON}, false},
		{"hostile json in bytes", &task.Envelope{Payload: []byte("[" + strings.Repeat("{},", 200000) + "{}]"), PayloadEncoding: task.PayloadBytes}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := displayPayload(c.env)
			_, isSlice := v.([]any)
			if isSlice != c.decoded {
				t.Fatalf("decoded %v (%T); want %v", isSlice, v, c.decoded)
			}
		})
	}
}
