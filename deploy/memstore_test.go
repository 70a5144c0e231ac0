package deploy

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// memStore is recorded series held in memory: a storage.Queryable for
// the PromQL engine, without a TSDB (whose package would bring in
// Prometheus's service discovery and every cloud SDK with it).
type memStore struct {
	series []*storage.SeriesEntry // sorted by labels
}

// add appends one series' samples (times in milliseconds). A series of
// labels already added gets a second entry, which the engine would reject:
// the loader refuses duplicates before.
func (s *memStore) add(lset labels.Labels, samples []chunks.Sample) {
	s.series = append(s.series, storage.NewListSeries(lset, samples))
	slices.SortFunc(s.series, func(a, b *storage.SeriesEntry) int { return labels.Compare(a.Labels(), b.Labels()) })
}

// Querier implements storage.Queryable. The engine reads only the samples
// of its window, so the querier needs no bounds of its own.
func (s *memStore) Querier(_, _ int64) (storage.Querier, error) { return memQuerier{s}, nil }

type memQuerier struct{ store *memStore }

func (q memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range q.store.series {
		if matchAll(s.Labels(), matchers) {
			out = append(out, s)
		}
	}
	return &listSeriesSet{series: out, i: -1}
}

func (q memQuerier) LabelValues(_ context.Context, name string, _ *storage.LabelHints, matchers ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var values []string
	for _, s := range q.store.series {
		if v := s.Labels().Get(name); v != "" && matchAll(s.Labels(), matchers) {
			values = append(values, v)
		}
	}
	slices.Sort(values)
	return slices.Compact(values), nil, nil
}

func (q memQuerier) LabelNames(_ context.Context, _ *storage.LabelHints, matchers ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var names []string
	for _, s := range q.store.series {
		if matchAll(s.Labels(), matchers) {
			s.Labels().Range(func(l labels.Label) { names = append(names, l.Name) })
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil, nil
}

func (memQuerier) Close() error { return nil }

func matchAll(lset labels.Labels, matchers []*labels.Matcher) bool {
	for _, m := range matchers {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// listSeriesSet is a storage.SeriesSet over a slice, already sorted.
type listSeriesSet struct {
	series []storage.Series
	i      int
}

func (l *listSeriesSet) Next() bool                      { l.i++; return l.i < len(l.series) }
func (l *listSeriesSet) At() storage.Series              { return l.series[l.i] }
func (*listSeriesSet) Err() error                        { return nil }
func (*listSeriesSet) Warnings() annotations.Annotations { return nil }

// floatSample is one recorded float sample, a chunks.Sample.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }
