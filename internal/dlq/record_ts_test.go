package dlq

import (
	"bytes"
	"testing"
	"time"
)

// Record timestamps are the msgpack timestamp extension (type -1), as
// docs/wire-format.md#timestamps says: fixext 4 for a whole second,
// fixext 8 with nanoseconds.
func TestRecordTimestampsAreTheExtension(t *testing.T) {
	whole := time.Date(2026, 11, 29, 2, 40, 26, 0, time.UTC)
	b, err := Encode(&Record{FirstFailure: whole, LastFailure: whole.Add(123456789)})
	if err != nil {
		t.Fatal(err)
	}
	for key, form := range map[string][]byte{"first_failure": {0xd6, 0xff}, "last_failure": {0xd7, 0xff}} {
		at := bytes.Index(b, append([]byte{0xa0 | byte(len(key))}, key...))
		if at < 0 || !bytes.HasPrefix(b[at+1+len(key):], form) {
			t.Errorf("%s is not written as % x...: % x", key, form, b)
		}
	}
	r, err := Decode(b)
	if err != nil || !r.FirstFailure.Equal(whole) || !r.LastFailure.Equal(whole.Add(123456789)) {
		t.Fatalf("%+v %v", r, err)
	}
}
