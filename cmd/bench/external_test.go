package main

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExternalRows runs every external measurement once on a small scale
// with nats-server and the consumer binary as processes: each row must
// report a positive, finite value for nodeq and its baseline, and no child
// process may outlive the run.
func TestExternalRows(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server and the consumer binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := config{reps: 1, minSeconds: 0.01} // the smallest throughput measurement: 2,000 tasks
	plan := externalPlan{workers: []int{4, sleepWorkers}, latencyRate: 500, latencyFor: 300 * time.Millisecond,
		rssPending: 200, rssAfter: time.Second}
	rows, err := externalRows(ctx, c, plan, t.TempDir(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(plan.workers) + 1 + 2 + 2 + 1; len(rows) != want { // echo rows, the success-log row, sleep, latency, RSS
		t.Fatalf("%d rows, want %d: %+v", len(rows), want, rows)
	}
	finite := func(v float64) bool { return v > 0 && !math.IsNaN(v) && !math.IsInf(v, 0) }
	for _, r := range rows {
		if !finite(r.Nodeq) || !finite(r.Baseline) || !finite(r.Ratio) || !strings.HasPrefix(r.Name, "external: ") {
			t.Errorf("%s: nodeq %v, baseline %v, ratio %v", r.Name, r.Nodeq, r.Baseline, r.Ratio)
		}
	}
	if left := children(t); len(left) > 0 {
		t.Errorf("child processes left running: %v", left)
	}
}

// children lists this process's child processes (Linux; none elsewhere).
func children(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pids = append(pids, strings.Fields(string(b))...)
	}
	return pids
}
