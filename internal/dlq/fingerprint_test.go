package dlq

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestFingerprint masks what differs between occurrences of one failure
// and keeps what tells failures apart.
func TestFingerprint(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"dial tcp 10.0.0.7:5432: i/o timeout after 3.5s", "dial tcp <addr>: i/o timeout after <n>s"},
		{"dial tcp [::1]:4222: connection refused", "dial tcp <addr>: connection refused"},
		{"dial tcp [fe80::1%eth0]:4222: no route", "dial tcp <addr>: no route"},
		{"dial tcp db.internal:5432: connection refused", "dial tcp <addr>: connection refused"},
		{`Post "https://api.example.com/v1/items/42": EOF`, `Post "<url>": EOF`},
		{"POST http://thumbs:8080/x: dial tcp: refused", "POST <url>: dial tcp: refused"},
		{"see (https://example.com/a).", "see (<url>)."},
		{"task 01HX3Q2V9KJ4ZP failed (attempt 3 of 3)", "task <id> failed (attempt <n> of <n>)"},
		{"object 5f2b9c1e-8d3a-4c7b-9e1f-0a2b3c4d5e6f not found", "object <uuid> not found"},
		{"checksum deadbeef01 != 0x1f", "checksum <hex> != <hex>"},
		{"exit status 137", "exit status <n>"},
		{"  many\n\tspaces  ", "many spaces"},
		// words with digits that are not IDs stay, their numbers masked
		{"sha256 mismatch on x86_64 (utf8)", "sha<n> mismatch on x<n>_<n> (utf<n>)"},
		{"deadline exceeded", "deadline exceeded"},
		{"", ""},
	} {
		if got := Fingerprint(tc.in); got != tc.want {
			t.Errorf("Fingerprint(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Two occurrences of one failure share a fingerprint; another failure does not.
	a, b := Fingerprint("resize 7hX2kq9pQ: timeout after 30s on 10.1.2.3:80"), Fingerprint("resize Zz81kq0LLx: timeout after 31s on 10.9.9.9:8080")
	if a != b {
		t.Errorf("one failure, two fingerprints: %q, %q", a, b)
	}
	if c := Fingerprint("resize 7hX2kq9pQ: permission denied"); c == a {
		t.Errorf("two failures, one fingerprint %q", c)
	}
	// Hostile: huge, invalid UTF-8, control characters.
	huge := strings.Repeat("é", 10_000) + "\xff\x00"
	if got := Fingerprint(huge); len(got) > MaxFingerprintLen || len(got) < MaxFingerprintLen-1 || !utf8.ValidString(got) {
		t.Errorf("huge message: %d bytes %q...", len(got), got[:min(len(got), 20)])
	}
	if got := Fingerprint("bad \xff\xfe byte"); !utf8.ValidString(got) {
		t.Errorf("invalid UTF-8 kept: %q", got)
	}
}

// TestGroupKey: IDs are stable, distinct per key, and ValidGroupID accepts
// exactly their form.
func TestGroupKey(t *testing.T) {
	e := Entry{Record: &Record{NodeType: "resize", Reason: ReasonExhausted, ErrorKind: "Transport", Error: "timeout after 30s"}}
	k := e.GroupKey()
	if k.Fingerprint != "timeout after <n>s" || k.NodeType != "resize" {
		t.Fatalf("key %+v", k)
	}
	if again := (Entry{Record: e.Record}).GroupKey(); again.ID() != k.ID() || !ValidGroupID(k.ID()) {
		t.Fatalf("ID %q", k.ID())
	}
	other := k
	other.Reason = ReasonPermanent
	if other.ID() == k.ID() {
		t.Error("two keys, one ID")
	}
	// The parts cannot run together into another key's ID.
	x, y := GroupKey{NodeType: "ab", Reason: "c"}, GroupKey{NodeType: "a", Reason: "bc"}
	if x.ID() == y.ID() {
		t.Error("keys run together")
	}
	undecodable := Entry{}.GroupKey()
	if undecodable.Reason != Undecodable || !ValidGroupID(undecodable.ID()) {
		t.Errorf("undecodable key %+v", undecodable)
	}
	for _, bad := range []string{"", "abc", "ABCDEF012345", "abcdef01234g", "abcdef0123456", "../../etc/pa"} {
		if ValidGroupID(bad) {
			t.Errorf("ValidGroupID(%q)", bad)
		}
	}
}

// BenchmarkFingerprint: the cost of grouping one record's message.
func BenchmarkFingerprint(b *testing.B) {
	msg := `Post "https://thumbs.internal:8443/v1/render/5f2b9c1e-8d3a-4c7b-9e1f-0a2b3c4d5e6f": dial tcp 10.0.3.17:8443: i/o timeout after 30.5s (task 01HX3Q2V9KJ4ZP, attempt 3 of 3)`
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		Fingerprint(msg)
	}
}
