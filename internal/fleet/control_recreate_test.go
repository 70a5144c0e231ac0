package fleet

import (
	"context"
	"testing"
	"time"
)

// A bucket deleted and created again (an operator clearing it) starts its
// revisions at 1: commands stored then must still reach the processes.
func TestCommandAfterBucketRecreated(t *testing.T) {
	e := newFleetEnv(t)
	p := e.follow(t, "p1")
	for i := range 3 {
		e.send(t, "", openFor(time.Hour, "r"))
		waitTold(t, p, i+1, "opens")
	}
	if err := e.js.DeleteKeyValue(context.Background(), ControlBucket); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	e.send(t, "", Command{Op: OpClose})
	waitTold(t, p, 4, "the close after the bucket was created again")
}
