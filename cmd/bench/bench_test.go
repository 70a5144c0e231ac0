package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// TestRowsMeasure runs every measurement once on a small scale: each must
// complete and report a plausible value, so the bench cannot rot.
func TestRowsMeasure(t *testing.T) {
	ctx := context.Background()
	b, err := newBench(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	const n = 300
	positive := func(name string, v float64, err error) {
		t.Helper()
		if err != nil || v <= 0 {
			t.Fatalf("%s: %v, %v", name, v, err)
		}
	}
	v, err := b.consumeRaw(ctx, n, false)
	positive("raw async", v, err)
	v, err = b.consumeRaw(ctx, n, true)
	positive("raw double", v, err)
	v, err = b.consumeNodeq(ctx, n, 4, "async", nil)
	positive("nodeq async", v, err)
	v, err = b.consumeNodeq(ctx, n, 4, "", func(i int) task.Params {
		if i%10 == 0 {
			return task.Params{"kind": "Transport", "times": 1}
		}
		return task.Params{"probability": 0}
	})
	positive("nodeq with retries", v, err)
	v, err = b.publishNodeq(ctx, n)
	positive("publish nodeq", v, err)
	v, err = b.publishRaw(ctx, n)
	positive("publish raw", v, err)
	v, err = b.replayNodeq(ctx, n)
	positive("replay", v, err)
	v, err = b.replayRaw(ctx, n)
	positive("replay raw", v, err)
	lat, err := b.latency(ctx, 500, 200*time.Millisecond, false)
	if err != nil || len(lat) != 100 || lat.pct(0.5) <= 0 {
		t.Fatalf("latency: %d samples, %v", len(lat), err)
	}
	// After the trip no task starts, and the prefetched ones go back.
	if react, late, err := b.breakerReaction(ctx); err != nil || react > time.Second || late != 0 {
		t.Fatalf("breaker reaction %v, %d tasks started after the trip, %v", react, late, err)
	}
}

// TestSizedTask checks the worst-case memory mode's tasks: each is
// accepted, hostile params hold as many values as the cap allows, and a
// task of maxTaskSize bytes is the largest the stream takes.
func TestSizedTask(t *testing.T) {
	ctx := context.Background()
	b, err := newBench(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if _, err := b.resetWith(ctx, queue.StreamOptions{MaxMsgSize: int32(maxTaskSize)}); err != nil {
		t.Fatal(err)
	}
	for _, hostile := range []bool{true, false} {
		m, err := sizedTask(b.names, "h1", "sleep", maxTaskSize, hostile, [][2]string{{"duration", "30s"}})
		if err != nil {
			t.Fatal(err)
		}
		env, err := task.DecodeMsgpack(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := env.Params["a"].([]any)
		if d, _, err := env.Params.Duration("duration"); err != nil || d != 30*time.Second || hostile != (len(a) == (task.MaxParamValues-5)/3) {
			t.Errorf("hostile %v: duration %v (%v), %d maps", hostile, d, err, len(a))
		}
		if _, err := b.js.PublishMsg(ctx, m); err != nil {
			t.Errorf("hostile %v: a task of maxTaskSize bytes: %v", hostile, err)
		}
		m, err = sizedTask(b.names, "h2", "sleep", maxTaskSize+1, hostile, [][2]string{{"duration", "30s"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.PublishMsg(ctx, m); err == nil {
			t.Errorf("hostile %v: a task one byte over maxTaskSize was stored", hostile)
		}
	}
}

// TestHostileMemory runs the worst-case memory mode on a small scale with
// the consumer binary: tasks are held, the byte budget caps how many, and
// failing tasks are dead-lettered.
func TestHostileMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the consumer binary")
	}
	b, err := newBench(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	cases := []memCase{
		{workers: 2, label: "idle"},
		{workers: 2, hostile: true, tasks: 3, label: "held"},
		{workers: 4, budget: 2 << 20, hostile: true, tasks: 5, label: "budget"}, // room for 2 tasks of 992 KiB
		{workers: 2, hostile: true, fail: true, tasks: 4, label: "dead-lettered"},
	}
	rows, err := b.hostileMemory(context.Background(), t.TempDir(), cases, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{0, 2, 2, -1} {
		r := rows[i]
		if r.PeakRSS <= 0 || want >= 0 && r.Held != want || i > 0 && r.Bound <= rows[0].PeakRSS {
			t.Errorf("%s: %+v, want %d held", r.Case, r, want)
		}
	}
}
