package main

import (
	"context"
	"testing"
	"time"

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
	v, err = b.consumeNodeq(ctx, n, 4, true, nil)
	positive("nodeq async", v, err)
	v, err = b.consumeNodeq(ctx, n, 4, false, func(i int) task.Params {
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
	if react, err := b.breakerReaction(ctx); err != nil || react > time.Second {
		t.Fatalf("breaker reaction %v, %v", react, err)
	}
}
