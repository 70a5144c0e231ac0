package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/nodeq/nodeq/internal/metrics"
)

// prometheusSeries are the series Prometheus itself makes for every
// target, which the rules and the dashboard may use.
var prometheusSeries = []string{"up"}

// nodeqSeries returns the names of the series a consumer exports once
// started (a histogram as its _bucket, _sum and _count series), read from
// the registry internal/metrics fills, as a consumer fills it.
func nodeqSeries(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Declare(metrics.Labels{NodeTypes: []string{"echo"}, Stream: "NODEQ_TASKS", Version: "test"})
	m.BreakerStarted("nodeq-workers")
	m.Breaker("nodeq-workers", 1, "open") // transitions exist from the first one
	m.DLQDepth(func() float64 { return 0 })
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range prometheusSeries {
		names[n] = true
	}
	for _, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		case dto.MetricType_SUMMARY:
			names[f.GetName()] = true
			names[f.GetName()+"_sum"] = true
			names[f.GetName()+"_count"] = true
		default:
			names[f.GetName()] = true
		}
	}
	return names
}

// vectorSelectors returns the series selectors of a PromQL expression.
func vectorSelectors(expr string) ([]*parser.VectorSelector, error) {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out, nil
}

// seriesNames returns the metric names a PromQL expression selects. A
// selector without a fixed name (a regular expression on __name__) is an
// error: it could not be checked.
func seriesNames(expr string) ([]string, error) {
	selectors, err := vectorSelectors(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, vs := range selectors {
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			return nil, fmt.Errorf("selector %s has no fixed metric name", vs)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// TestRulesUseNodeqSeries fails when an alert rule queries a series nodeq
// does not export (renamed, or not added yet): such an alert never fires.
func TestRulesUseNodeqSeries(t *testing.T) {
	exported := nodeqSeries(t)
	groups, err := loadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			names, err := seriesNames(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			for _, n := range names {
				if !exported[n] {
					t.Errorf("alert %s queries %s, which nodeq does not export (exported: %s)", r.Alert, n, sortedKeys(exported))
				}
			}
		}
	}
}

func sortedKeys(m map[string]bool) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}
