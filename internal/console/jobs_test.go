package console

import (
	"context"
	"testing"
)

// TestJobsForgetOnlyFinished: beyond maxJobs the oldest finished jobs are
// forgotten; a running one is kept however old.
func TestJobsForgetOnlyFinished(t *testing.T) {
	js := newJobs()
	release := make(chan struct{})
	running := js.start(context.Background(), func(j *job) { <-release; j.finish(j.summary, nil) })
	for range maxJobs + 10 {
		done := make(chan struct{})
		js.start(context.Background(), func(j *job) { j.finish(j.summary, nil); close(done) })
		<-done
	}
	if js.get(running.ID) == nil {
		t.Fatal("the running job was forgotten")
	}
	if n := len(js.byID); n > maxJobs {
		t.Errorf("%d jobs kept, want at most %d", n, maxJobs)
	}
	close(release)
	js.wait()
}
