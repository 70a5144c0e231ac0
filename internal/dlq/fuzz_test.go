package dlq

import (
	"testing"
	"time"
)

// FuzzDecodeRecord feeds arbitrary bytes to the dead-letter record decoder:
// it must not panic, and a record it accepts must encode again.
func FuzzDecodeRecord(f *testing.F) {
	good, _ := Encode(&Record{Reason: ReasonPermanent, TaskID: "t", NodeType: "echo", ErrorKind: "Manifest", Error: "bad",
		Causes: []string{"bad"}, Stack: "goroutine 1", FirstFailure: time.Unix(1, 0), Headers: map[string][]string{"A": {"b"}}, Data: []byte{1, 2}})
	for _, seed := range [][]byte{good, good[:len(good)/2], {0x80}, {0xdf, 0xff, 0xff, 0xff, 0xff}, {}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		if _, err := Encode(r); err != nil {
			t.Fatalf("an accepted record does not encode: %v", err)
		}
		_ = r.ReplayCount()
	})
}
