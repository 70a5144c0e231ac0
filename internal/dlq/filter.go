package dlq

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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
	// AfterSeq and BeforeSeq bound the record's stream sequence (exclusive), for paging.
	AfterSeq, BeforeSeq uint64
}

// Matches reports whether the record stored at t with sequence seq is selected.
func (f *Filter) Matches(r *Record, seq uint64, t time.Time) bool {
	if f.AfterSeq > 0 && seq <= f.AfterSeq || f.BeforeSeq > 0 && seq >= f.BeforeSeq {
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
	return true
}

// IsZero reports whether the filter selects every record.
func (f *Filter) IsZero() bool {
	return len(f.NodeTypes) == 0 && len(f.Kinds) == 0 && len(f.Reasons) == 0 && f.Since.IsZero() && f.Until.IsZero() &&
		f.TaskID == "" && f.Match == "" && f.AfterSeq == 0 && f.BeforeSeq == 0
}

func contains(list []string, v string, fold bool) bool {
	for _, x := range list {
		if x == v || fold && strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// ParseTime reads an absolute time (RFC 3339, "2006-01-02 15:04", or a date
// "2006-01-02", UTC) or a time relative to now: "90m" or "2h" means that
// long ago, "3d" that many days ago.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
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
