package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

func TestTallyCounts(t *testing.T) {
	cases := []struct {
		name               string
		tally              queue.Tally
		deliveries         int
		unsettled, charged int
	}{
		{"first delivery", queue.Tally{}, 1, 0, 1},
		{"two crashes", queue.Tally{}, 3, 2, 3},
		{"handed back twice", queue.Tally{HandedBack: 2}, 3, 0, 1},
		{"redelivered twice", queue.Tally{Redelivered: 2}, 3, 0, 3},
		{"handed back, redelivered, crashed", queue.Tally{HandedBack: 1, Redelivered: 1}, 4, 1, 3},
		{"five hand-backs then a failure", queue.Tally{HandedBack: 5}, 6, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.tally.Unsettled(c.deliveries); got != c.unsettled {
				t.Errorf("Unsettled(%d) = %d, want %d", c.deliveries, got, c.unsettled)
			}
			if got := c.tally.Charged(c.deliveries); got != c.charged {
				t.Errorf("Charged(%d) = %d, want %d", c.deliveries, got, c.charged)
			}
		})
	}
}

// ledgerSetup starts a server with nodeq's streams and opens the ledger.
func ledgerSetup(t *testing.T) (jetstream.JetStream, *queue.DeliveryLedger) {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Server(t))
	names := queue.DefaultNames()
	if err := queue.EnsureStreams(context.Background(), js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := queue.OpenDeliveryLedger(context.Background(), js, names, nil)
	if err != nil {
		t.Fatal(err)
	}
	return js, l
}

// The ledger against a real server: counts add up under concurrent
// writers (compare-and-set), a forged entry is bounded by the delivery
// count, and Forget removes the entry.
func TestDeliveryLedger(t *testing.T) {
	_, l := ledgerSetup(t)
	ctx := context.Background()
	if _, ok, err := l.Tally(ctx, 7, 2); ok || err != nil {
		t.Fatalf("unknown task: ok %v, err %v", ok, err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			d := queue.Tally{HandedBack: 1}
			if i%2 == 1 {
				d = queue.Tally{Redelivered: 1}
			}
			if err := l.Add(ctx, 7, d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, ok, err := l.Tally(ctx, 7, 20)
	if err != nil || !ok || got != (queue.Tally{HandedBack: 4, Redelivered: 4}) {
		t.Fatalf("tally %+v, ok %v, err %v; want 4 and 4", got, ok, err)
	}
	// Bounded by the deliveries so far: at most deliveries-1 in all.
	if got, _, _ := l.Tally(ctx, 7, 3); got.HandedBack+got.Redelivered != 2 {
		t.Fatalf("bounded tally %+v; want 2 in all for the third delivery", got)
	}
	// Failed probes are kept, and a forged count is bounded the same way:
	// it cannot make every failed probe of a task look like its first.
	if err := l.Add(ctx, 7, queue.Tally{Probed: 1000}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := l.Tally(ctx, 7, 3); got.Probed != 2 {
		t.Fatalf("bounded failed probes %d; want 2 for the third delivery", got.Probed)
	}
	if got, _, _ := l.Tally(ctx, 7, 2000); got.Probed != 1000 {
		t.Fatalf("failed probes %d; want the 1000 noted", got.Probed)
	}
	if err := l.Forget(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := l.Tally(ctx, 7, 20); ok || err != nil {
		t.Fatalf("after Forget: ok %v, err %v", ok, err)
	}
	if err := l.Add(ctx, 7, queue.Tally{HandedBack: 1}); err != nil {
		t.Fatalf("Add after Forget: %v", err)
	}
	if got, _, _ := l.Tally(ctx, 7, 5); got != (queue.Tally{HandedBack: 1}) {
		t.Fatalf("after Forget and Add: %+v", got)
	}
}

// Held reports add up in the summary, and a report of nothing removes one.
func TestHeldReportsSummed(t *testing.T) {
	js, l := ledgerSetup(t)
	ctx := context.Background()
	names := queue.DefaultNames()
	if _, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	for i, n := range []int{3, 2} {
		if err := l.ReportHeld(ctx, fmt.Sprintf("host %d/pid", i), queue.HeldReport{Tasks: n, Since: since.Add(time.Duration(i) * time.Second), Error: "maximum bytes exceeded"}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := queue.ReadHeldSummary(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	if h.Tasks != 5 || h.Processes != 2 || !h.Since.Equal(since) || h.Error != "maximum bytes exceeded" {
		t.Fatalf("summary %+v", h)
	}
	if err := l.ReportHeld(ctx, "host 0/pid", queue.HeldReport{}); err != nil {
		t.Fatal(err)
	}
	if h, _ := queue.ReadHeldSummary(ctx, js, names); h.Tasks != 2 || h.Processes != 1 {
		t.Fatalf("after one cleared: %+v", h)
	}
}

func TestTallySoloCrashes(t *testing.T) {
	for _, c := range []struct {
		t    queue.Tally
		want int
	}{
		{queue.Tally{}, 0},
		{queue.Tally{Solo: 2}, 2},
		{queue.Tally{Solo: 3, SoloDone: 1}, 2},
		{queue.Tally{Solo: 1, SoloDone: 5}, 0}, // a forged entry
	} {
		if got := c.t.SoloCrashes(); got != c.want {
			t.Errorf("%+v.SoloCrashes() = %d, want %d", c.t, got, c.want)
		}
	}
}
