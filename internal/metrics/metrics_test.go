package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// gather scrapes reg: the families by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series returns the series of family name whose labels are labels
// (name, value pairs), nil when there is none.
func series(t *testing.T, reg *prometheus.Registry, name string, labels ...string) *dto.Metric {
	t.Helper()
	mf := gather(t, reg)[name]
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := len(got) == len(labels)/2
		for i := 0; match && i+1 < len(labels); i += 2 {
			match = got[labels[i]] == labels[i+1]
		}
		if match {
			return m
		}
	}
	return nil
}

// The queue wait counts from the time the task was stored; a wait below
// zero (clocks that disagree) counts as 0, an unknown store time not at all.
func TestQueueWait(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	stored := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	m.QueueWait("echo", stored, stored.Add(90*time.Second))
	m.QueueWait("echo", stored, stored.Add(-3*time.Second)) // this host's clock is behind the server's
	m.QueueWait("echo", time.Time{}, stored)                // no metadata
	h := series(t, reg, "nodeq_task_queue_wait_seconds", "node_type", "echo").GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 90 {
		t.Fatalf("count %d, sum %v; want 2 observations summing to 90s", h.GetSampleCount(), h.GetSampleSum())
	}
	// The clamped one is in the lowest bucket; the buckets reach an hour.
	b := h.GetBucket()
	if b[0].GetUpperBound() != 0.001 || b[0].GetCumulativeCount() != 1 {
		t.Fatalf("first bucket %v: want le=0.001 holding the clamped wait", b[0])
	}
	if top := b[len(b)-1].GetUpperBound(); top < 3600 || top > 2*3600 {
		t.Fatalf("the largest bucket is %vs; want about an hour", top)
	}
}

// Dead letters are counted by reason; a reason outside the fixed set is
// "other", so that no caller can make the label unbounded.
func TestDeadLetterReasons(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.DeadLetter("echo", ReasonPermanent)
	m.DeadLetter("echo", ReasonPermanent)
	m.DeadLetter(UnknownNodeType, ReasonUnknownNodeType)
	m.DeadLetter("echo", "made_up\x00"+strings.Repeat("x", 1000))
	for _, c := range []struct {
		nodeType, reason string
		want             float64
	}{{"echo", ReasonPermanent, 2}, {UnknownNodeType, ReasonUnknownNodeType, 1}, {"echo", ReasonOther, 1}} {
		if got := series(t, reg, "nodeq_dead_letters_total", "node_type", c.nodeType, "reason", c.reason).GetCounter().GetValue(); got != c.want {
			t.Errorf("nodeq_dead_letters_total{%s,%s} = %v; want %v", c.nodeType, c.reason, got, c.want)
		}
	}
	if n := len(gather(t, reg)["nodeq_dead_letters_total"].GetMetric()); n != 3 {
		t.Fatalf("%d series; want 3", n)
	}
}

// recorder registers with reg and remembers every collector, so that a
// test can tell which series exist at all.
type recorder struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
	r.Registry.MustRegister(cs...)
}

// declared returns metrics as a consumer sets them up at start-up, before
// any task: with Declare, a breaker and the DLQ depth.
func declared(t *testing.T) (*Metrics, *recorder) {
	t.Helper()
	reg := &recorder{Registry: prometheus.NewRegistry()}
	m := New(reg)
	m.Declare(Labels{NodeTypes: []string{"echo", "thumbs"}, Stream: "NODEQ_TASKS", Version: "1.2.3"})
	m.BreakerStarted("nodeq-workers")
	m.DLQDepth(func() float64 { return 0 })
	return m, reg
}

// Every series exists from start-up, before any task: each collector
// registered shows in a scrape, and the bounded label values are all there
// at their start values.
func TestPresentAtStart(t *testing.T) {
	_, reg := declared(t)
	got := gather(t, reg.Registry)
	for _, c := range reg.collectors {
		descs := make(chan *prometheus.Desc, 10)
		c.Describe(descs)
		close(descs)
		for d := range descs {
			name := descName(t, d)
			if _, ok := got[name]; !ok {
				t.Errorf("%s is registered but absent from a scrape at start-up", name)
			}
		}
	}
	r := reg.Registry
	for _, nt := range []string{"echo", "thumbs", UnknownNodeType, InvalidNodeType} {
		for _, o := range outcomes {
			if series(t, r, "nodeq_tasks_total", "node_type", nt, "outcome", o) == nil {
				t.Errorf("nodeq_tasks_total{node_type=%q,outcome=%q} absent", nt, o)
			}
		}
		for _, reason := range reasons {
			if series(t, r, "nodeq_dead_letters_total", "node_type", nt, "reason", reason) == nil {
				t.Errorf("nodeq_dead_letters_total{node_type=%q,reason=%q} absent", nt, reason)
			}
		}
	}
	for _, name := range []string{"nodeq_task_queue_wait_seconds", "nodeq_task_duration_seconds"} {
		if n := len(got[name].GetMetric()); n != 2 {
			t.Errorf("%s: %d series; want the 2 registered node types", name, n)
		}
	}
	for _, to := range breakerStates {
		if series(t, r, "nodeq_breaker_transitions_total", "subscription", "nodeq-workers", "to", to) == nil {
			t.Errorf("nodeq_breaker_transitions_total{to=%q} absent", to)
		}
	}
	if n := len(got["nodeq_pull_failures_total"].GetMetric()); n != len(pullCauses) {
		t.Errorf("nodeq_pull_failures_total: %d series; want %d", n, len(pullCauses))
	}
	for _, name := range []string{"nodeq_stream_pending_tasks", "nodeq_stream_ack_pending_tasks", "nodeq_stream_redelivered_tasks"} {
		if s := series(t, r, name, "stream", "NODEQ_TASKS"); s == nil || s.GetGauge().GetValue() != 0 {
			t.Errorf("%s{stream=NODEQ_TASKS} = %v; want 0", name, s)
		}
	}
	if s := series(t, r, "nodeq_build_info", "version", "1.2.3"); s.GetGauge().GetValue() != 1 {
		t.Errorf("nodeq_build_info{version=1.2.3} = %v; want 1", s)
	}
	for _, name := range []string{"nodeq_tasks_prefetched", "nodeq_dlq_held_tasks"} {
		if len(got[name].GetMetric()) != 1 {
			t.Errorf("%s absent at start-up", name)
		}
	}
}

// descName is the fully-qualified name in a Desc (which has no accessor).
func descName(t *testing.T, d *prometheus.Desc) string {
	t.Helper()
	s := d.String()
	_, rest, ok := strings.Cut(s, `fqName: "`)
	name, _, ok2 := strings.Cut(rest, `"`)
	if !ok || !ok2 {
		t.Fatalf("cannot read the name of %s", s)
	}
	return name
}

func TestStreamTasks(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.StreamTasks("NODEQ_TASKS", StreamTasks{Pending: 7, AckPending: 3, Redelivered: 1})
	for name, want := range map[string]float64{"nodeq_stream_pending_tasks": 7, "nodeq_stream_ack_pending_tasks": 3, "nodeq_stream_redelivered_tasks": 1} {
		if got := series(t, reg, name, "stream", "NODEQ_TASKS").GetGauge().GetValue(); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
}

// Every method is safe on nil Metrics.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Declare(Labels{NodeTypes: []string{"echo"}})
	m.QueueWait("echo", time.Now(), time.Now())
	m.StreamTasks("s", StreamTasks{Pending: 1})
	m.DeadLetter("echo", ReasonPoison)
	m.BreakerStarted("x")
}

// The fixed label values are those of the packages that own them: a
// reason, a pull cause or a breaker state added there must be added here.
func TestVocabularies(t *testing.T) {
	if got := constStrings(t, "../dlq/record.go", "Reason"); !slices.Equal(got, reasons) {
		t.Errorf("dlq's reasons %v; metrics has %v", got, reasons)
	}
	if got := constStrings(t, "../queue/fetch.go", "Pull"); !slices.Equal(got, pullCauses) {
		t.Errorf("queue's pull causes %v; metrics has %v", got, pullCauses)
	}
	var states []string
	for _, s := range []resilience.State{resilience.StateClosed, resilience.StateOpen, resilience.StateHalfOpen} {
		states = append(states, s.String())
	}
	if !slices.Equal(states, breakerStates) {
		t.Errorf("resilience's states %v; metrics has %v", states, breakerStates)
	}
	if InvalidNodeType != queue.InvalidNodeType {
		t.Errorf("InvalidNodeType %q; queue's is %q", InvalidNodeType, queue.InvalidNodeType)
	}
	if slices.Contains(reasons, ReasonOther) {
		t.Errorf("%q is a real reason: it cannot also stand for the unknown ones", ReasonOther)
	}
}

// constStrings returns the string constants of file whose names start
// with prefix, in order.
func constStrings(t *testing.T, file, prefix string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out = append(out, v)
				}
			}
		}
	}
	return out
}
