package dlq

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// Bounds on what a record adds to the task it carries. The task itself is
// kept byte for byte; its failure context is cut to these sizes so that
// any task the task stream accepts has a record that fits in one message.
const (
	// MaxErrorLen caps Record.Error in bytes.
	MaxErrorLen = 2 << 10
	// MaxCauses caps the cause chain; MaxCauseLen each cause in bytes.
	MaxCauses   = 16
	MaxCauseLen = 256
	// MaxStackLen caps a panic's stack trace in bytes (its top is kept).
	MaxStackLen = 4 << 10
	// maxSubjectLen caps Record.Subject. A longer subject names no node
	// type, so the record could not be replayed to it anyway.
	maxSubjectLen = 512
	// maxShortField caps the other text fields (worker, stream, version).
	maxShortField = 256
	// recordFixedOverhead bounds everything a record adds besides the
	// task's headers and body: the fields above, field names, the record
	// message's own headers. TestRecordOverheadBound checks it.
	recordFixedOverhead = 16 << 10
)

// MaxTaskSize returns the largest task message, headers and body together,
// whose dead-letter record fits in a message of maxPayload bytes (the
// server's max_payload). It leaves recordFixedOverhead for the failure
// context and 1/64 for the record's encoding of the task's headers, which
// can be up to about 1% larger than their wire form. For the default
// max_payload of 1 MiB it is 992 KiB.
func MaxTaskSize(maxPayload int64) int64 {
	return maxPayload - maxPayload/64 - recordFixedOverhead
}

// DefaultMaskedHeaders are the task headers whose values a record does not
// keep: credentials that must not sit in the dead-letter stream for weeks
// or be shown to whoever reads it.
var DefaultMaskedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
	"X-Api-Key", "Api-Key", "X-Auth-Token", "X-Access-Token", "X-Amz-Security-Token", "X-Csrf-Token",
}

// Masked is the value a masked header is recorded with.
const Masked = "[masked]"

// MaskHeaders returns a copy of h in which each header named in mask
// (case-insensitively) has the single value Masked.
func MaskHeaders(h nats.Header, mask []string) map[string][]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string][]string, len(h))
	for k, vs := range h {
		if isMasked(k, mask) {
			out[k] = []string{Masked}
			continue
		}
		out[k] = vs
	}
	return out
}

func isMasked(name string, mask []string) bool {
	for _, m := range mask {
		if strings.EqualFold(name, m) {
			return true
		}
	}
	return false
}

// bound cuts the record's failure context to the limits above. The task's
// headers and body are not touched.
func (r *Record) bound() {
	r.Error = truncate(r.Error, MaxErrorLen)
	if len(r.Causes) > MaxCauses {
		r.Causes = append(r.Causes[:MaxCauses-1:MaxCauses-1], fmt.Sprintf("(%d more causes)", len(r.Causes)-MaxCauses+1))
	}
	for i, c := range r.Causes {
		r.Causes[i] = truncate(c, MaxCauseLen)
	}
	r.Stack = truncate(r.Stack, MaxStackLen)
	r.Subject = truncate(r.Subject, maxSubjectLen)
	for _, s := range []*string{&r.Worker, &r.Stream, &r.NodeqVersion, &r.Reason, &r.ErrorKind, &r.NodeType,
		&r.TaskID, &r.NodeID, &r.CorrelationID} {
		*s = truncate(*s, maxShortField)
	}
}

// truncate cuts s to at most n bytes on a rune boundary, saying how much was cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	note := fmt.Sprintf("... (%d bytes cut)", len(s)-n)
	cut := max(n-len(note), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + note
}
