package dlq

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestRecordOverheadBound builds the largest record a task of MaxTaskSize
// bytes can produce, for header shapes that cost the record most, and
// checks that it fits in max_payload: every task the task stream accepts
// can be dead-lettered with its bytes intact.
func TestRecordOverheadBound(t *testing.T) {
	for _, maxPayload := range []int64{1 << 20, 8 << 20, 64 << 10} {
		limit := int(MaxTaskSize(maxPayload))
		shapes := map[string]func(budget int) nats.Header{
			"no headers": func(int) nats.Header { return nil },
			// 256-byte values cost msgpack a 3-byte length against 4 bytes of
			// ": \r\n" in the wire form, under keys whose length costs 2: the
			// worst ratio.
			"many long lines": func(budget int) nats.Header {
				h := nats.Header{}
				line := 40 + 256 + 4
				for i := 0; (i+2)*line < budget; i++ {
					h[fmt.Sprintf("X-Key-%034d", i)] = []string{strings.Repeat("v", 256)}
				}
				return h
			},
			"masked one-byte credentials": func(int) nats.Header {
				h := nats.Header{}
				for _, k := range DefaultMaskedHeaders {
					h[k] = []string{"a", "b", "c"}
				}
				return h
			},
		}
		for name, shape := range shapes {
			t.Run(fmt.Sprintf("%d/%s", maxPayload, name), func(t *testing.T) {
				h := shape(limit / 2)
				data := strings.Repeat("d", limit-headerSize(h))
				if got := len(data) + headerSize(h); got != limit {
					t.Fatalf("task is %d bytes, want %d", got, limit)
				}
				now := time.Now()
				causes := make([]string, 100)
				for i := range causes {
					causes[i] = strings.Repeat("c", 10_000)
				}
				long := strings.Repeat("€", 100_000)
				r := &Record{Reason: ReasonExhausted + long, TaskID: long, NodeID: long, NodeType: strings.Repeat("n", 64), CorrelationID: long,
					ErrorKind: long, Error: long, Causes: causes, Stack: long, Attempts: 1 << 30, Deliveries: 1 << 30,
					FirstFailure: now, LastFailure: now, Worker: long, Subject: "tasks." + long, Stream: strings.Repeat("S", 255),
					Sequence: 1<<64 - 1, NodeqVersion: long, Headers: MaskHeaders(h, DefaultMaskedHeaders), Data: []byte(data)}
				msg, err := recordMsg("dlq", r)
				if err != nil {
					t.Fatal(err)
				}
				if size := msgSize(msg); int64(size) > maxPayload {
					t.Fatalf("record of %d bytes for a %d-byte task exceeds max_payload %d by %d", size, limit, maxPayload, int64(size)-maxPayload)
				}
				back, err := Decode(msg.Data)
				if err != nil {
					t.Fatal(err)
				}
				if string(back.Data) != data || len(back.Causes) != MaxCauses || len(back.Error) > MaxErrorLen || len(back.Stack) > MaxStackLen {
					t.Fatalf("bounded record: data intact %v, %d causes, error %d bytes, stack %d bytes",
						string(back.Data) == data, len(back.Causes), len(back.Error), len(back.Stack))
				}
			})
		}
	}
}

func TestMaskHeaders(t *testing.T) {
	h := nats.Header{"Authorization": {"Bearer s3cret"}, "cookie": {"a=1", "b=2"}, "X-Trace": {"t1"}}
	got := MaskHeaders(h, DefaultMaskedHeaders)
	if v := got["Authorization"]; len(v) != 1 || v[0] != Masked {
		t.Errorf("Authorization: %q", v)
	}
	if v := got["cookie"]; len(v) != 1 || v[0] != Masked {
		t.Errorf("cookie (lower case): %q", v)
	}
	if v := got["X-Trace"]; len(v) != 1 || v[0] != "t1" {
		t.Errorf("X-Trace: %q", v)
	}
	if h["Authorization"][0] != "Bearer s3cret" {
		t.Error("the original headers were changed")
	}
}

func TestTruncate(t *testing.T) {
	s := truncate(strings.Repeat("é", 100), 51)
	if len(s) > 51 || !strings.HasSuffix(s, "(149 bytes cut)") {
		t.Fatalf("%q (%d bytes)", s, len(s))
	}
	if truncate("short", 10) != "short" {
		t.Fatal("short string changed")
	}
}
