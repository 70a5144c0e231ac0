package executor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Echo returns the task's payload unchanged.
func Echo() Executor {
	return Func(func(_ context.Context, t *task.Envelope) ([]byte, error) { return t.Payload, nil })
}

// Sleep waits for the "duration" param ("250ms", or a number of
// milliseconds), at most max, then returns the payload. It is for load tests.
func Sleep(max time.Duration) Executor {
	return Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		d, _, err := t.Params.Duration("duration")
		if err != nil {
			return nil, resilience.Wrap(resilience.Manifest, err)
		}
		if d < 0 || (max > 0 && d > max) {
			return nil, resilience.Errorf(resilience.Manifest, "param duration: %v is outside 0..%v", d, max)
		}
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return t.Payload, nil
		case <-ctx.Done():
			return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("sleep interrupted: %w", ctx.Err()))
		}
	})
}

// Fault is the fault injector. Params:
//   - kind: error kind to fail with (default "Execution")
//   - times: fail the first N attempts of each task ID in this process, then succeed
//   - probability: fail each attempt with this probability (0..1)
//   - panic: true to panic instead of returning an error
//   - message: the error message
//
// With neither times nor probability it always fails. On success it returns the payload.
func Fault() Executor {
	f := &fault{seen: map[string]int{}}
	return Func(f.execute)
}

type fault struct {
	mu   sync.Mutex
	seen map[string]int // task ID -> attempts failed so far
}

const maxFaultTracked = 100_000

func (f *fault) execute(_ context.Context, t *task.Envelope) ([]byte, error) {
	kind := resilience.Execution
	if s, ok := t.Params.String("kind"); ok {
		k, err := resilience.ParseKind(s)
		if err != nil {
			return nil, resilience.Wrap(resilience.Manifest, fmt.Errorf("param kind: %w", err))
		}
		kind = k
	}
	times, hasTimes, err := t.Params.Int("times")
	if err != nil {
		return nil, resilience.Wrap(resilience.Manifest, err)
	}
	prob, hasProb, err := t.Params.Float("probability")
	if err != nil {
		return nil, resilience.Wrap(resilience.Manifest, err)
	}
	fail := !hasTimes && !hasProb
	if hasTimes {
		f.mu.Lock()
		n := f.seen[t.ID]
		if n < int(times) {
			fail = true
			if len(f.seen) >= maxFaultTracked {
				clear(f.seen)
			}
			f.seen[t.ID] = n + 1
		} else {
			delete(f.seen, t.ID)
		}
		f.mu.Unlock()
	}
	if hasProb && rand.Float64() < prob {
		fail = true
	}
	if !fail {
		return t.Payload, nil
	}
	msg, ok := t.Params.String("message")
	if !ok {
		msg = "injected fault"
	}
	if p, _ := t.Params.String("panic"); p == "true" {
		panic(msg)
	}
	return nil, resilience.Errorf(kind, "%s", msg)
}
