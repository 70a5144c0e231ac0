package deploy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"go.yaml.in/yaml/v3"
)

// This file runs rule unit tests written in promtool's format
// (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/)
// the way `promtool test rules` does: the input series are loaded, every
// alerting rule is evaluated with Prometheus's PromQL engine at 0,
// evaluation_interval, 2*evaluation_interval, ... up to the last eval_time,
// keeping each alert's pending and firing state as Prometheus's rule
// manager does (`for`, `keep_firing_for`), and at each eval_time the firing
// alerts, with their labels and expanded annotations, must be exactly the
// expected ones. Features this runner does not implement (promql_expr_test,
// external labels, start timestamps, native histograms, query offsets) are
// refused as unknown fields, never ignored.

var promParser = parser.NewParser(parser.Options{})

// unitTestFile is a promtool rule test file.
type unitTestFile struct {
	RuleFiles          []string    `yaml:"rule_files"`
	EvaluationInterval duration    `yaml:"evaluation_interval"`
	Tests              []testGroup `yaml:"tests"`
}

// testGroup is one scenario: input series and the alerts expected over
// them.
type testGroup struct {
	Name           string          `yaml:"name"`
	Interval       duration        `yaml:"interval"`
	InputSeries    []inputSeries   `yaml:"input_series"`
	AlertRuleTests []alertTestCase `yaml:"alert_rule_test"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

// alertTestCase is the firing alerts of one rule expected at one time.
type alertTestCase struct {
	EvalTime  duration   `yaml:"eval_time"`
	Alertname string     `yaml:"alertname"`
	ExpAlerts []expAlert `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// duration is a Prometheus duration ("90s", "1h30m") in YAML.
type duration time.Duration

func (d duration) std() time.Duration { return time.Duration(d) }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := model.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

// loadUnitTests reads a promtool rule test file, resolving its rule files
// beside it.
func loadUnitTests(path string) (*unitTestFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f unitTestFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.EvaluationInterval == 0 {
		f.EvaluationInterval = duration(time.Minute)
	}
	for i, rf := range f.RuleFiles {
		if !filepath.IsAbs(rf) {
			f.RuleFiles[i] = filepath.Join(filepath.Dir(path), rf)
		}
	}
	return &f, nil
}

// loadRules parses rule files as Prometheus does (rulefmt, which also
// parses every expression) and returns their groups.
func loadRules(files ...string) ([]rulefmt.RuleGroup, error) {
	var groups []rulefmt.RuleGroup
	for _, f := range files {
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
		if len(errs) > 0 {
			return nil, fmt.Errorf("%s: %w", f, errors.Join(errs...))
		}
		groups = append(groups, rgs.Groups...)
	}
	return groups, nil
}

// alertingRule is one alerting rule and the state of its alerts, as
// Prometheus's rules.AlertingRule keeps it.
type alertingRule struct {
	name          string
	expr          string
	holdDuration  time.Duration
	keepFiringFor time.Duration
	labels        map[string]string
	annotations   map[string]string
	active        map[uint64]*alert
}

type alertState int

const (
	inactive alertState = iota
	pending
	firing
)

type alert struct {
	state           alertState
	labels          labels.Labels
	annotations     labels.Labels
	activeAt        time.Time
	keepFiringSince time.Time
}

// newAlertingRules makes the alerting rules of groups; a group with a
// query offset or a limit is refused (this runner does not apply them).
func newAlertingRules(groups []rulefmt.RuleGroup) ([]*alertingRule, error) {
	var out []*alertingRule
	for _, g := range groups {
		if g.QueryOffset != nil || g.Limit != 0 {
			return nil, fmt.Errorf("group %s: query_offset and limit are not supported by this runner", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				return nil, fmt.Errorf("group %s: recording rule %s: recording rules are not supported by this runner", g.Name, r.Record)
			}
			ls := map[string]string{}
			for k, v := range g.Labels {
				ls[k] = v
			}
			for k, v := range r.Labels {
				ls[k] = v
			}
			out = append(out, &alertingRule{
				name: r.Alert, expr: r.Expr,
				holdDuration: time.Duration(r.For), keepFiringFor: time.Duration(r.KeepFiringFor),
				labels: ls, annotations: r.Annotations, active: map[uint64]*alert{},
			})
		}
	}
	return out, nil
}

// queryFunc evaluates an instant query.
type queryFunc func(ctx context.Context, q string, ts time.Time) (promql.Vector, error)

// eval evaluates the rule at ts and updates its alerts, as
// rules.AlertingRule.Eval does.
func (r *alertingRule) eval(ctx context.Context, ts time.Time, query queryFunc) error {
	res, err := query(ctx, r.expr, ts)
	if err != nil {
		return fmt.Errorf("rule %s at %s: %w", r.name, ts.Sub(time.Unix(0, 0)), err)
	}
	seen := map[uint64]*alert{}
	for _, smpl := range res {
		data := template.AlertTemplateData(smpl.Metric.Map(), nil, "", smpl)
		expand := func(text string) (string, error) {
			defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
			tmpl := template.NewTemplateExpander(ctx, defs+text, "__alert_"+r.name, data,
				model.Time(timestamp.FromTime(ts)), template.QueryFunc(query), nil, nil)
			return tmpl.Expand()
		}
		lb := labels.NewBuilder(smpl.Metric)
		lb.Del(model.MetricNameLabel)
		for k, v := range r.labels {
			ev, err := expand(v)
			if err != nil {
				return fmt.Errorf("rule %s: label %s: %w", r.name, k, err)
			}
			lb.Set(k, ev)
		}
		lb.Set(labels.AlertName, r.name)
		anns := map[string]string{}
		for k, v := range r.annotations {
			ev, err := expand(v)
			if err != nil {
				return fmt.Errorf("rule %s: annotation %s: %w", r.name, k, err)
			}
			anns[k] = ev
		}
		lset := lb.Labels()
		h := lset.Hash()
		if _, dup := seen[h]; dup {
			return fmt.Errorf("rule %s at %s: two results have the labels %s", r.name, ts.Sub(time.Unix(0, 0)), lset)
		}
		seen[h] = &alert{state: pending, labels: lset, annotations: labels.FromMap(anns), activeAt: ts}
	}
	for h, a := range seen {
		if old, ok := r.active[h]; ok && old.state != inactive {
			old.annotations = a.annotations
			continue
		}
		r.active[h] = a
	}
	for h, a := range r.active {
		if _, ok := seen[h]; !ok {
			keep := false
			if a.state == firing && r.keepFiringFor > 0 {
				if a.keepFiringSince.IsZero() {
					a.keepFiringSince = ts
				}
				keep = ts.Sub(a.keepFiringSince) < r.keepFiringFor
			}
			if !keep {
				delete(r.active, h) // a resolved alert is never firing again
				continue
			}
		} else {
			a.keepFiringSince = time.Time{}
		}
		if a.state == pending && ts.Sub(a.activeAt) >= r.holdDuration {
			a.state = firing
		}
	}
	return nil
}

// firing returns the rule's firing alerts, sorted.
func (r *alertingRule) firing() []string {
	var out []string
	for _, a := range r.active {
		if a.state == firing {
			out = append(out, alertString(a.labels, a.annotations))
		}
	}
	slices.Sort(out)
	return out
}

func alertString(ls, anns labels.Labels) string {
	return fmt.Sprintf("labels %s, annotations %s", ls, anns)
}

// newEngine is a PromQL engine set up as promtool's.
func newEngine(evalInterval time.Duration) *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		Logger:                   slog.New(slog.DiscardHandler),
		MaxSamples:               50000,
		Timeout:                  100 * time.Second,
		NoStepSubqueryIntervalFn: func(int64) int64 { return evalInterval.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		Parser:                   promParser,
	})
}

// load makes the store of a test group's input series, each sample
// interval after the one before, from time 0.
func (tg *testGroup) load() (*memStore, error) {
	store := &memStore{}
	seen := map[uint64]bool{}
	for _, in := range tg.InputSeries {
		lset, values, err := promParser.ParseSeriesDesc(in.Series + " " + in.Values)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", in.Series, err)
		}
		if seen[lset.Hash()] {
			return nil, fmt.Errorf("series %s: given twice", in.Series)
		}
		seen[lset.Hash()] = true
		var samples []chunks.Sample
		for i, v := range values {
			if v.Histogram != nil {
				return nil, fmt.Errorf("series %s: native histograms are not supported by this runner", in.Series)
			}
			if !v.Omitted {
				samples = append(samples, floatSample{t: int64(i) * time.Duration(tg.Interval).Milliseconds(), f: v.Value})
			}
		}
		store.add(lset, samples)
	}
	return store, nil
}

// run evaluates the rules over the group's series and returns every
// difference between the expected and the firing alerts.
func (tg *testGroup) run(ctx context.Context, groups []rulefmt.RuleGroup, evalInterval time.Duration) ([]string, error) {
	if tg.Interval == 0 {
		tg.Interval = duration(evalInterval)
	}
	store, err := tg.load()
	if err != nil {
		return nil, err
	}
	rules, err := newAlertingRules(groups)
	if err != nil {
		return nil, err
	}
	byName := map[string]*alertingRule{}
	for _, r := range rules {
		byName[r.name] = r
	}
	engine := newEngine(evalInterval)
	query := func(ctx context.Context, q string, ts time.Time) (promql.Vector, error) {
		qry, err := engine.NewInstantQuery(ctx, store, nil, q, ts)
		if err != nil {
			return nil, err
		}
		defer qry.Close()
		res := qry.Exec(ctx)
		if res.Err != nil {
			return nil, res.Err
		}
		switch v := res.Value.(type) {
		case promql.Vector:
			return v, nil
		case promql.Scalar:
			return promql.Vector{promql.Sample{T: v.T, F: v.V, Metric: labels.EmptyLabels()}}, nil
		default:
			return nil, fmt.Errorf("rule result is not a vector or a scalar: %s", res.Value.Type())
		}
	}
	cases := slices.Clone(tg.AlertRuleTests)
	slices.SortStableFunc(cases, func(a, b alertTestCase) int { return cmp.Compare(a.EvalTime, b.EvalTime) })
	var maxt time.Duration
	for _, c := range cases {
		if byName[c.Alertname] == nil {
			return nil, fmt.Errorf("alert_rule_test names %q, which no rule file has", c.Alertname)
		}
		maxt = max(maxt, time.Duration(c.EvalTime))
	}
	var diffs []string
	start := time.Unix(0, 0).UTC()
	for ts := time.Duration(0); ts <= maxt; ts += evalInterval {
		for _, r := range rules {
			if err := r.eval(ctx, start.Add(ts), query); err != nil {
				return nil, err
			}
		}
		// An eval_time between two evaluations sees the earlier one.
		for len(cases) > 0 && time.Duration(cases[0].EvalTime) < ts+evalInterval {
			c := cases[0]
			cases = cases[1:]
			var want []string
			for _, e := range c.ExpAlerts {
				ls := map[string]string{labels.AlertName: c.Alertname}
				for k, v := range e.ExpLabels {
					ls[k] = v
				}
				want = append(want, alertString(labels.FromMap(ls), labels.FromMap(e.ExpAnnotations)))
			}
			slices.Sort(want)
			if got := byName[c.Alertname].firing(); !slices.Equal(got, want) {
				diffs = append(diffs, fmt.Sprintf("alert %s at %s:\n  want firing: %s\n  got firing:  %s",
					c.Alertname, time.Duration(c.EvalTime), listOrNone(want), listOrNone(got)))
			}
		}
	}
	return diffs, nil
}

func listOrNone(alerts []string) string {
	if len(alerts) == 0 {
		return "none"
	}
	return strings.Join(alerts, "\n               ")
}
