package dlq

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &Record{Reason: ReasonPermanent, TaskID: "t", NodeType: "echo", ErrorKind: "Manifest", Error: "bad",
		Causes: []string{"bad"}, Attempts: 1, Deliveries: 2, FirstFailure: now, LastFailure: now, Worker: "h/1",
		Subject: "tasks.echo", Stream: "S", Sequence: 9, NodeqVersion: "v", Headers: map[string][]string{"A": {"b"}}, Data: []byte{0, 1}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("%+v", out)
	}
	if _, err := Decode([]byte{0x81}); err == nil {
		t.Fatal("truncated record decoded")
	}
	if _, err := Decode(b[:len(b)/2]); err == nil {
		t.Fatal("half a record decoded")
	}
}

// TestDecodeHostileRecords: anyone allowed to publish on dlq.> can write a
// record; the operator's tools must get an error, not a crash.
func TestDecodeHostileRecords(t *testing.T) {
	for name, data := range map[string]string{
		"nil time field (msgpack/v5 panics)": "\xde\x00\x01\xaclast_failure\xc0",
		"headers claiming 4 billion entries": "\x81\xa7headers\xdf\xff\xff\xff\xff",
		"data longer than the record":        "\x81\xa4data\xc6\x7f\xff\xff\xff",
	} {
		if r, err := Decode([]byte(data)); err == nil {
			t.Errorf("%s: decoded %+v", name, r)
		} else if !strings.Contains(err.Error(), "malformed dead-letter record: msgpack") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCauseChain(t *testing.T) {
	root := errors.New("connection refused")
	err := fmt.Errorf("POST /hook: %w", fmt.Errorf("dial: %w", root))
	got := CauseChain(err)
	want := []string{"POST /hook: dial: connection refused", "dial: connection refused", "connection refused"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
	if got := CauseChain(&wrapper{root}); len(got) != 1 {
		t.Fatalf("a wrapper with its cause's message repeats it: %q", got)
	}
	joined := CauseChain(errors.Join(errors.New("a"), errors.New("b")))
	if len(joined) != 3 || joined[1] != "a" || joined[2] != "b" {
		t.Fatalf("%q", joined)
	}
}

type wrapper struct{ err error }

func (w *wrapper) Error() string { return w.err.Error() }
func (w *wrapper) Unwrap() error { return w.err }
