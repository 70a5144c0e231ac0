package dlq

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Group is one failure group: the records of one node type that failed
// for one reason, with one error kind and one message fingerprint
// (GroupKey), the way ServicePulse groups failed messages.
type Group struct {
	// ID is the key's ID, for Filter.Group.
	ID string `json:"id"`
	GroupKey
	// Count is how many records the group holds.
	Count int `json:"count"`
	// First and Last are when its oldest and newest records were stored.
	First time.Time `json:"first_seen"`
	Last  time.Time `json:"last_seen"`
	// FirstSeq and LastSeq are their sequences.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Sample is the error message of its newest record, cut to MaxErrorLen.
	Sample string `json:"sample"`
	// Distinct is how many different error messages it has (at most 1,000
	// are told apart).
	Distinct int `json:"distinct_messages"`

	messages map[string]struct{}
}

// maxDistinct caps the messages a group tells apart.
const maxDistinct = 1000

// maxCachedFingerprints caps the fingerprints Stats keeps by message.
const maxCachedFingerprints = 10_000

// Stats returns the failure groups of the selected records, largest
// first, and how many records it read.
func (s *Store) Stats(ctx context.Context, f *Filter) ([]*Group, int, error) {
	groups := map[GroupKey]*Group{}
	fingerprints := map[string]string{} // by message: failures repeat theirs
	fingerprint := func(msg string) string {
		fp, ok := fingerprints[msg]
		if !ok {
			fp = Fingerprint(msg)
			if len(fingerprints) < maxCachedFingerprints {
				fingerprints[msg] = fp
			}
		}
		return fp
	}
	total := 0
	err := s.Scan(ctx, f, 0, func(e Entry) error {
		total++
		key := e.groupKey(fingerprint)
		g := groups[key]
		if g == nil {
			g = &Group{ID: key.ID(), GroupKey: key, First: e.Time, FirstSeq: e.Seq, messages: map[string]struct{}{}}
			groups[key] = g
		}
		g.Count++
		g.Last, g.LastSeq = e.Time, e.Seq
		g.Sample = key.Fingerprint
		if e.Record != nil {
			g.Sample = truncate(e.Record.Error, MaxErrorLen)
		}
		if len(g.messages) < maxDistinct {
			g.messages[g.Sample] = struct{}{}
		}
		return nil
	})
	out := make([]*Group, 0, len(groups))
	for _, g := range groups {
		g.Distinct, g.messages = len(g.messages), nil
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), b.Last.Compare(a.Last), cmp.Compare(a.ID, b.ID))
	})
	return out, total, err
}

// Count returns how many records f selects.
func (s *Store) Count(ctx context.Context, f *Filter) (int, error) {
	n := 0
	err := s.Scan(ctx, f, 0, func(Entry) error { n++; return nil })
	return n, err
}
