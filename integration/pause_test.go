package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// TestFleetPause: an operator pause stops delivery to every consumer,
// survives a consumer restart, and ends with resume or at its deadline.
func TestFleetPause(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	c := e.echoCounter()
	ctx := context.Background()
	if err := fleet.Pause(ctx, e.js, e.names, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		e.publish(&task.Envelope{ID: fmt.Sprintf("p-%d", i), NodeType: "echo"})
	}
	time.Sleep(4 * pullWait) // several pull cycles go by
	// A consumer process starting now must not lift the pause.
	if _, err := queue.EnsureConsumer(ctx, e.js, e.names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := fleet.GetStatus(ctx, e.js, e.names)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Paused || st.Pending != 10 || c.total() != 0 || time.Until(st.PausedUntil) < 50*time.Minute {
		t.Fatalf("while paused: %+v, %d tasks ran", st, c.total())
	}
	if err := fleet.Resume(ctx, e.js, e.names); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the paused tasks to run after resume", func() bool { return c.total() == 10 })

	// A pause with a deadline ends by itself.
	if err := fleet.Pause(ctx, e.js, e.names, time.Now().Add(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	e.publish(&task.Envelope{ID: "after-window", NodeType: "echo"})
	time.Sleep(4 * pullWait)
	if c.total() != 10 {
		t.Fatal("a task ran during the maintenance window")
	}
	eventually(t, 10*time.Second, "the server to resume by itself", func() bool { return c.total() == 11 })
	if st, _ := fleet.GetStatus(ctx, e.js, e.names); st.Paused || st.Pending != 0 {
		t.Fatalf("after the window: %+v", st)
	}
}
