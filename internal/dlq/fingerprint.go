package dlq

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaxFingerprintLen caps a fingerprint in bytes.
const MaxFingerprintLen = 256

// masks matches, in one pass, the parts of an error message that differ
// between occurrences of one failure. At a position the first alternative
// that matches wins: an address before its numbers, a UUID before its hex
// runs, a word before its digits.
var masks = regexp.MustCompile(strings.Join([]string{
	`(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]*[^\s"'<>:,.;)\]])`,       // not its trailing punctuation
	`(?P<addr>\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*(?:%[\w.-]+)?\](?::\d+)?)`,     // [::1]:4222, [fe80::1%eth0]:4222
	`(?P<addr>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)`,                        // 10.0.0.7:5432
	`(?P<addr>\b(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+):\d{1,5}\b)`, // db.internal:5432
	`(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)`,
	`(?P<hex>\b0x[0-9a-fA-F]+\b)`,
	`(?P<word>\b[A-Za-z0-9_-]{8,}\b)`, // a hex run, an ID, or a plain word
	`(?P<n>\d+(?:\.\d+)?)`,
}, "|"))

// Fingerprint returns msg with what tells one occurrence of a failure from
// another masked: URLs, network addresses, UUIDs, hexadecimal runs (0x1f,
// or 8 hex digits or more with a digit among them), IDs (8 characters or
// more, letters and digits mixed) and numbers, with runs of white space
// folded to one space, cut to MaxFingerprintLen bytes. Records with the
// same node type, reason, error kind and fingerprint are one failure group
// (GroupKey).
//
//	dial tcp 10.0.0.7:5432: i/o timeout after 3.5s  ->  dial tcp <addr>: i/o timeout after <n>s
//	task 01HX3Q2V9KJ4 failed (attempt 3)             ->  task <id> failed (attempt <n>)
func Fingerprint(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > MaxErrorLen {
		cut := MaxErrorLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	if !strings.ContainsAny(msg, "0123456789[") && !strings.Contains(msg, "://") {
		return fold(msg) // nothing to mask: no number, address or URL
	}
	names := masks.SubexpNames()
	var b strings.Builder
	last := 0
	for _, m := range masks.FindAllStringSubmatchIndex(msg, -1) {
		b.WriteString(msg[last:m[0]])
		last = m[1]
		for i := 1; 2*i < len(m); i++ {
			if m[2*i] < 0 {
				continue
			}
			if names[i] == "word" {
				b.WriteString(maskWord(msg[m[0]:m[1]]))
			} else {
				b.WriteString("<" + names[i] + ">")
			}
			break
		}
	}
	b.WriteString(msg[last:])
	return fold(b.String())
}

// fold folds runs of white space to one space and cuts s to
// MaxFingerprintLen bytes.
func fold(s string) string {
	out := strings.Join(strings.Fields(s), " ")
	if len(out) > MaxFingerprintLen {
		cut := MaxFingerprintLen
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut]
	}
	return out
}

// maskWord masks a word of 8 characters or more: a run of hex digits with
// a digit among them is <hex>, letters and digits mixed an <id>; a word of
// letters alone stays.
func maskWord(w string) string {
	digits := strings.ContainsAny(w, "0123456789")
	switch {
	case !digits:
		return w
	case strings.Trim(w, "0123456789abcdefABCDEF") == "":
		return "<hex>"
	case strings.ContainsFunc(w, func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' }):
		return "<id>"
	}
	return "<n>" // digits with - or _ between them: 2026-11-29, 1_000_000
}

// GroupKey names a failure group: records of one node type that failed
// for one reason, with one error kind and one message fingerprint.
type GroupKey struct {
	NodeType    string `json:"node_type"`
	Reason      string `json:"reason"`
	ErrorKind   string `json:"error_kind"`
	Fingerprint string `json:"fingerprint"`
}

// Undecodable is the reason, kind and fingerprint of the group of messages
// on the dead-letter stream that are not records.
const Undecodable = "undecodable"

// GroupKey returns the failure group of the entry.
func (e Entry) GroupKey() GroupKey { return e.groupKey(Fingerprint) }

// groupKey is GroupKey with the fingerprints fingerprint makes.
func (e Entry) groupKey(fingerprint func(string) string) GroupKey {
	if e.Record == nil {
		return GroupKey{NodeType: "?", Reason: Undecodable, ErrorKind: "?", Fingerprint: "(" + Undecodable + " record)"}
	}
	r := e.Record
	return GroupKey{NodeType: truncate(r.NodeType, maxShortField), Reason: truncate(r.Reason, maxShortField),
		ErrorKind: truncate(r.ErrorKind, maxShortField), Fingerprint: fingerprint(r.Error)}
}

// ID returns the group's ID: 12 hexadecimal digits of a hash of the key,
// stable across runs and processes, for Filter.Group and URLs.
func (k GroupKey) ID() string {
	h := sha256.New()
	for _, s := range []string{k.NodeType, k.Reason, k.ErrorKind, k.Fingerprint} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// ValidGroupID reports whether s has the form of a group ID.
func ValidGroupID(s string) bool {
	if len(s) != 12 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
