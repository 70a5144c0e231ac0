package dlq

import (
	"errors"
	"fmt"
	"reflect"
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
