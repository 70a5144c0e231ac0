package dlq

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodeq/nodeq/internal/task"
)

// Filter selects dead-letter records. Zero fields select everything; set
// fields must all match.
type Filter struct {
	// NodeTypes selects records of these node types.
	NodeTypes []string
	// Kinds selects these error kinds (case-insensitive).
	Kinds []string
	// Reasons selects these reasons (e.g. "retries_exhausted").
	Reasons []string
	// Since and Until bound the time the record was stored (Until exclusive).
	Since, Until time.Time
	// TaskID selects one task's records.
	TaskID string
	// Match selects records whose error message contains it (case-insensitive).
	Match string
	// Group selects the records of one failure group (GroupKey.ID).
	Group string
	// Seqs selects only the records stored at these sequences. A sequence
	// with no record (replayed or purged meanwhile) selects nothing.
	Seqs []uint64
	// AfterSeq and BeforeSeq bound the record's stream sequence (exclusive), for paging.
	AfterSeq, BeforeSeq uint64
}

// Selects reports whether the filter selects the entry. A message that is
// not a record (Entry.Err) is selected only by filters it can be checked
// against: node types (its subject), sequences, cursors and its group.
func (f *Filter) Selects(e Entry) bool {
	if e.Record != nil {
		return f.Matches(e.Record, e.Seq, e.Time)
	}
	g := *f
	g.NodeTypes, g.AfterSeq, g.BeforeSeq, g.Seqs, g.Group = nil, 0, 0, nil, ""
	return g.IsZero() && f.matchesPlace(e.Seq) && (f.Group == "" || e.GroupKey().ID() == f.Group)
}

// matchesPlace reports whether seq is within the cursors and Seqs.
func (f *Filter) matchesPlace(seq uint64) bool {
	if f.AfterSeq > 0 && seq <= f.AfterSeq || f.BeforeSeq > 0 && seq >= f.BeforeSeq {
		return false
	}
	return len(f.Seqs) == 0 || slices.Contains(f.Seqs, seq)
}

// Matches reports whether the record stored at t with sequence seq is
// selected. The node types are checked against the record's own (Scan
// also selects them by subject).
func (f *Filter) Matches(r *Record, seq uint64, t time.Time) bool {
	if !f.matchesPlace(seq) {
		return false
	}
	if !f.Since.IsZero() && t.Before(f.Since) || !f.Until.IsZero() && !t.Before(f.Until) {
		return false
	}
	if len(f.NodeTypes) > 0 && !contains(f.NodeTypes, r.NodeType, false) {
		return false
	}
	if len(f.Kinds) > 0 && !contains(f.Kinds, r.ErrorKind, true) {
		return false
	}
	if len(f.Reasons) > 0 && !contains(f.Reasons, r.Reason, true) {
		return false
	}
	if f.TaskID != "" && r.TaskID != f.TaskID {
		return false
	}
	if f.Match != "" && !strings.Contains(strings.ToLower(r.Error), strings.ToLower(f.Match)) {
		return false
	}
	if f.Group != "" && (Entry{Record: r}).GroupKey().ID() != f.Group {
		return false
	}
	return true
}

// IsZero reports whether the filter selects every record.
func (f *Filter) IsZero() bool {
	return len(f.NodeTypes) == 0 && len(f.Kinds) == 0 && len(f.Reasons) == 0 && f.Since.IsZero() && f.Until.IsZero() &&
		f.TaskID == "" && f.Match == "" && f.Group == "" && len(f.Seqs) == 0 && f.AfterSeq == 0 && f.BeforeSeq == 0
}

func contains(list []string, v string, fold bool) bool {
	for _, x := range list {
		if x == v || fold && strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// maxDays caps an age in days: longer would overflow a time.Duration.
const maxDays = 100 * 365

// ParseTime reads an absolute time (RFC 3339, "2006-01-02 15:04", or a date
// "2006-01-02", UTC) or a time relative to now: "90m" or "2h" means that
// long ago, "3d" that many days ago.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days <= maxDays {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-11-28T09:00:00Z), a date (2026-11-28), or an age (90m, 2h, 3d)", s)
}

// ReplayCount reads how many times a task was replayed from its original
// headers (0 when never).
func (r *Record) ReplayCount() int {
	if vs := r.Headers[HeaderReplays]; len(vs) > 0 {
		if n, err := strconv.Atoi(vs[0]); err == nil && n >= 0 {
			return n
		}
	}
	return 0
}

// MaxSeqs caps Filter.Seqs; MaxValues each of NodeTypes, Kinds and Reasons.
const (
	MaxSeqs   = 10_000
	MaxValues = 256
)

// Validate checks the filter's closed sets and forms: node types (or
// "_invalid"), reasons (Reasons), the group ID, the number of sequences,
// and that Since is before Until. Error kinds are the resilience kinds,
// which this package does not know: callers check them.
func (f *Filter) Validate() error {
	if len(f.NodeTypes) > MaxValues || len(f.Kinds) > MaxValues || len(f.Reasons) > MaxValues {
		return fmt.Errorf("at most %d node types, kinds or reasons in one filter", MaxValues)
	}
	for _, t := range f.NodeTypes {
		if !task.ValidNodeType(t) && t != "_invalid" {
			return fmt.Errorf("node type %q is not a node type", t)
		}
	}
	for _, r := range f.Reasons {
		if !slices.Contains(Reasons, r) {
			return fmt.Errorf("reason %q: want one of %s", r, strings.Join(Reasons, ", "))
		}
	}
	if f.Group != "" && !ValidGroupID(f.Group) {
		return fmt.Errorf("group %q: want a group ID, 12 hexadecimal digits (see dlq stats)", f.Group)
	}
	if len(f.Seqs) > MaxSeqs {
		return fmt.Errorf("%d sequences: at most %d at once", len(f.Seqs), MaxSeqs)
	}
	if slices.Contains(f.Seqs, 0) {
		return fmt.Errorf("sequence 0: records are numbered from 1")
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fmt.Errorf("since %s is not before until %s: no record can match", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return nil
}
