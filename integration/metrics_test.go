package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// metricSeries reads every series of a counter or gauge family, keyed by
// its labels ("node_type=echo,reason=invalid"), as a scrape would.
func metricSeries(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			out[strings.Join(labels, ",")] = v
		}
	}
	return out
}

// queueWaitBelow is how many queue waits were observed at or below le
// seconds (the bucket with that upper bound), over every node type.
func queueWaitBelow(t *testing.T, reg *prometheus.Registry, le float64) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "nodeq_task_queue_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				if b.GetUpperBound() == le {
					n += b.GetCumulativeCount()
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatalf("no queue-wait bucket le=%v", le)
	}
	return n
}

// TestMetricsAnswerTheUsualQuestions runs a consumer with metrics over
// tasks that succeed, fail for good, keep failing, name unknown node types,
// are unreadable or outlive their deadline, all published while the
// durable consumer is paused, and checks the metrics against what the
// server and the dead-letter stream say: the stream gauges show the paused
// tasks pending; every series is there before any task; one queue wait per
// delivery that ran, each at least as long as the pause; dead letters by
// node type and reason as in the stored records.
func TestMetricsAnswerTheUsualQuestions(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	ctx := context.Background()
	if _, err := e.js.PauseConsumer(ctx, e.names.TaskStream, e.names.Consumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	j := &journal{}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: j.wrap(executor.Echo(), nil)})
	_ = reg.Register(executor.Node{Type: "fault", Executor: j.wrap(executor.Fault(), nil)})

	var envs []*task.Envelope
	for i := range 10 {
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("ok%d", i), NodeType: "echo", Params: task.Params{"text": "hi"}})
	}
	for i := range 3 {
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("perm%d", i), NodeType: "fault", Params: task.Params{"kind": "Manifest"}})
	}
	for i := range 2 {
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("flaky%d", i), NodeType: "fault", Params: task.Params{"kind": "Transport"}})
		envs = append(envs, &task.Envelope{ID: fmt.Sprintf("nope%d", i), NodeType: "nope"})
	}
	// Its deadline passes while the consumer is paused.
	envs = append(envs, &task.Envelope{ID: "late", NodeType: "echo", Deadline: time.Now().Add(200 * time.Millisecond)})
	e.publish(envs...)
	e.publishRaw(&natsMsg{subject: e.names.TaskPrefix + ".echo", data: "not a task"}) // invalid, node type echo
	e.publishRaw(&natsMsg{subject: e.names.TaskPrefix + ".a.b", data: "not a task"})  // invalid, no valid node type
	published := len(envs) + 2
	lastPublish := time.Now()

	promReg := prometheus.NewRegistry()
	e.start(reg, runnerOpts{workers: 4, retry: resilience.None(), metrics: metrics.New(promReg),
		redelivery: resilience.Redelivery{MaxDeliveries: 2, Backoff: []time.Duration{100 * time.Millisecond}}})

	// Paused: every task is pending, none delivered.
	stream := "stream=" + e.names.TaskStream
	eventually(t, 10*time.Second, "the stream gauges to show the paused tasks", func() bool {
		return metricSeries(t, promReg, "nodeq_stream_pending_tasks")[stream] == float64(published)
	})
	if got := metricSeries(t, promReg, "nodeq_stream_ack_pending_tasks")[stream]; got != 0 {
		t.Fatalf("nodeq_stream_ack_pending_tasks %v while paused; want 0", got)
	}
	// Every series is there before the first task, at 0.
	for name, key := range map[string]string{
		"nodeq_tasks_total":              "node_type=echo,outcome=succeeded",
		"nodeq_dead_letters_total":       "node_type=_unknown,reason=unknown_node_type",
		"nodeq_task_queue_wait_seconds":  "node_type=fault",
		"nodeq_stream_redelivered_tasks": stream,
		"nodeq_pull_failures_total":      "cause=no_responders",
	} {
		if v, ok := metricSeries(t, promReg, name)[key]; !ok || v != 0 {
			t.Errorf("%s{%s} = %v (present %v) before any task; want 0", name, key, v, ok)
		}
	}
	if info := metricSeries(t, promReg, "nodeq_build_info"); len(info) != 1 || slices.Collect(maps.Values(info))[0] != 1 {
		t.Errorf("nodeq_build_info %v; want one version at 1", info)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Paused a while: the late task's deadline passes, and every wait is
	// longer than the lowest buckets.
	time.Sleep(300*time.Millisecond - time.Since(lastPublish))
	pausedFor := time.Since(lastPublish)
	if _, err := e.js.ResumeConsumer(ctx, e.names.TaskStream, e.names.Consumer); err != nil {
		t.Fatal(err)
	}
	const succeeded = 10
	dead := published - succeeded
	eventually(t, 30*time.Second, "every task to succeed or be dead-lettered", func() bool {
		return e.streamMsgs(e.names.TaskStream) == 0 && int(e.streamMsgs(e.names.DLQStream)) == dead &&
			counterValue(t, promReg, "echo", metrics.Succeeded) == succeeded
	})

	// One queue wait per delivery that ran, none shorter than the pause.
	ran := 0
	for _, r := range j.all() {
		if r.attempt.Number == 1 {
			ran++
		}
	}
	var waits float64
	for _, n := range metricSeries(t, promReg, "nodeq_task_queue_wait_seconds") {
		waits += n
	}
	if ran != succeeded+3+2*2 || int(waits) != ran {
		t.Fatalf("%v queue waits observed, %d deliveries ran; want one per delivery (%d)", waits, ran, succeeded+3+2*2)
	}
	if n := queueWaitBelow(t, promReg, 0.256); n != 0 {
		t.Fatalf("%d queue waits of at most 256ms; every task waited the pause (%v)", n, pausedFor)
	}

	// Dead letters by node type and reason are the stored records'.
	want := map[string]float64{}
	for _, r := range e.records() {
		label := r.rec.NodeType
		if _, ok := reg.Lookup(label); !ok && label != queue.InvalidNodeType {
			label = metrics.UnknownNodeType
		}
		want["node_type="+label+",reason="+r.rec.Reason]++
	}
	wantKeys := []string{"node_type=echo,reason=invalid", "node_type=_invalid,reason=invalid", "node_type=_unknown,reason=unknown_node_type",
		"node_type=fault,reason=permanent_error", "node_type=fault,reason=retries_exhausted", "node_type=echo,reason=deadline_exceeded"}
	if got := slices.Sorted(maps.Keys(want)); !slices.Equal(got, slices.Sorted(slices.Values(wantKeys))) {
		t.Fatalf("records by node type and reason %v; want %v", want, wantKeys)
	}
	got := metricSeries(t, promReg, "nodeq_dead_letters_total")
	for key, v := range got {
		if v != want[key] {
			t.Errorf("nodeq_dead_letters_total{%s} = %v; the dead-letter stream holds %v", key, v, want[key])
		}
	}
	var deadCounted float64
	for _, v := range got {
		deadCounted += v
	}

	lost := published - succeeded - dead - int(e.streamMsgs(e.names.TaskStream))
	t.Logf("published %d = succeeded %d + dead-lettered %d (counted %v), %d lost", published, succeeded, dead, deadCounted, lost)
	if lost != 0 || int(deadCounted) != dead {
		t.Fatalf("accounting: published %d, succeeded %d, dead-lettered %d (counted %v), lost %d", published, succeeded, dead, deadCounted, lost)
	}
}
