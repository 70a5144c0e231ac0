package dlq

import (
	"context"
	"sort"
	"time"
)

// Group is the records of one node type and error kind.
type Group struct {
	NodeType, ErrorKind string
	Count               int
	First, Last         time.Time
	// Sample is the most common error message of the group and Distinct how
	// many different messages it has (at most 1,000 are told apart).
	Sample     string
	SampleN    int
	Distinct   int
	messageCnt map[string]int
}

// Stats groups the selected records by node type and error kind, largest group first.
func (s *Store) Stats(ctx context.Context, f *Filter) ([]*Group, int, error) {
	groups := map[[2]string]*Group{}
	total := 0
	err := s.Scan(ctx, f, 0, func(e Entry) error {
		total++
		key := [2]string{"?", "undecodable"}
		if e.Record != nil {
			key = [2]string{e.Record.NodeType, e.Record.ErrorKind}
		}
		g := groups[key]
		if g == nil {
			g = &Group{NodeType: key[0], ErrorKind: key[1], First: e.Time, messageCnt: map[string]int{}}
			groups[key] = g
		}
		g.Count++
		g.Last = e.Time
		msg := "(undecodable record)"
		if e.Record != nil {
			msg = e.Record.Error
		}
		if _, seen := g.messageCnt[msg]; seen || len(g.messageCnt) < 1000 {
			g.messageCnt[msg]++
		}
		return nil
	})
	out := make([]*Group, 0, len(groups))
	for _, g := range groups {
		g.Distinct = len(g.messageCnt)
		for m, n := range g.messageCnt {
			if n > g.SampleN || n == g.SampleN && m < g.Sample {
				g.Sample, g.SampleN = m, n
			}
		}
		g.messageCnt = nil
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].NodeType+out[i].ErrorKind < out[j].NodeType+out[j].ErrorKind
	})
	return out, total, err
}

// Count returns how many records f selects.
func (s *Store) Count(ctx context.Context, f *Filter) (int, error) {
	n := 0
	err := s.Scan(ctx, f, 0, func(Entry) error { n++; return nil })
	return n, err
}
