package console

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/nodeq/nodeq/internal/dlq"
)

// job is a replay the console runs in the background; a page follows it
// by polling GET /api/jobs/{id}.
type job struct {
	ID string

	ctx    context.Context
	cancel context.CancelFunc
	o      dlq.ReplayOptions

	mu       sync.Mutex
	started  time.Time
	ended    time.Time
	summary  dlq.ReplaySummary
	err      error
	finished bool
}

// JobState is a replay's progress as the API reports it.
type JobState struct {
	ID      string            `json:"id"`
	Started time.Time         `json:"started"`
	Ended   time.Time         `json:"ended,omitzero"`
	Done    bool              `json:"done"`
	Summary dlq.ReplaySummary `json:"summary"`
	// Rate is records settled per second so far.
	Rate  float64 `json:"rate"`
	Error string  `json:"error,omitempty"`
}

func (j *job) progress(s dlq.ReplaySummary) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.summary = s
}

func (j *job) finish(s dlq.ReplaySummary, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.summary, j.err, j.finished, j.ended = s, err, true, time.Now()
}

func (j *job) snapshot() JobState {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := JobState{ID: j.ID, Started: j.started.UTC(), Done: j.finished, Summary: j.summary}
	s.Summary.Errors = append([]string(nil), j.summary.Errors...)
	end := time.Now()
	if j.finished {
		end, s.Ended = j.ended, j.ended.UTC()
	}
	if secs := end.Sub(j.started).Seconds(); secs > 0 {
		s.Rate = float64(j.summary.Replayed+j.summary.Duplicates) / secs
	}
	if j.err != nil {
		s.Error = j.err.Error()
	}
	return s
}

// jobs are the replays started, the newest maxJobs kept.
type jobs struct {
	mu    sync.Mutex
	byID  map[string]*job
	order []string
	wg    sync.WaitGroup
}

const maxJobs = 50

func newJobs() *jobs { return &jobs{byID: map[string]*job{}} }

// start runs fn as a new job under ctx.
func (js *jobs) start(ctx context.Context, fn func(*job)) *job {
	j := &job{ID: nuid.Next(), started: time.Now()}
	j.ctx, j.cancel = context.WithCancel(ctx)
	js.mu.Lock()
	js.byID[j.ID] = j
	js.order = append(js.order, j.ID)
	// Forget the oldest finished jobs beyond maxJobs; running ones stay.
	for i := 0; len(js.order) > maxJobs && i < len(js.order); {
		if old := js.byID[js.order[i]]; old != nil && !old.snapshot().Done {
			i++
			continue
		}
		delete(js.byID, js.order[i])
		js.order = append(js.order[:i], js.order[i+1:]...)
	}
	js.mu.Unlock()
	js.wg.Go(func() {
		defer j.cancel()
		fn(j)
	})
	return j
}

func (js *jobs) get(id string) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.byID[id]
}

func (js *jobs) wait() { js.wg.Wait() }
