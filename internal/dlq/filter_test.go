package dlq

import (
	"strings"
	"testing"
	"time"
)

// TestFilterValidate: the closed sets, forms and sizes a filter may have.
func TestFilterValidate(t *testing.T) {
	many := make([]string, MaxValues+1)
	for i := range many {
		many[i] = "t" + strings.Repeat("x", i%5)
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		f    Filter
		want string // "" for valid
	}{
		{"empty", Filter{}, ""},
		{"everything set", Filter{NodeTypes: []string{"resize", "_invalid"}, Reasons: []string{ReasonPoison}, Group: "0123456789ab", Seqs: []uint64{1}, Since: now.Add(-time.Hour), Until: now}, ""},
		{"a wildcard node type", Filter{NodeTypes: []string{"tasks.>"}}, "not a node type"},
		{"an unknown reason", Filter{Reasons: []string{"unknown-node-type"}}, "want one of"},
		{"a bad group", Filter{Group: "ZZZ"}, "group ID"},
		{"sequence 0", Filter{Seqs: []uint64{0}}, "numbered from 1"},
		{"too many sequences", Filter{Seqs: make([]uint64, MaxSeqs+1)}, "at most"},
		{"too many node types", Filter{NodeTypes: many}, "at most"},
		{"since after until", Filter{Since: now, Until: now.Add(-time.Second)}, "not before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate()
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestParseTimeBounds: ages too long for a duration are refused, not wrapped.
func TestParseTimeBounds(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	if got, err := ParseTime("3d", now); err != nil || !got.Equal(now.Add(-72*time.Hour)) {
		t.Errorf("3d: %v, %v", got, err)
	}
	for _, s := range []string{"99999999999d", "-1d", "99999999999h"} {
		if got, err := ParseTime(s, now); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", s, got)
		}
	}
}
