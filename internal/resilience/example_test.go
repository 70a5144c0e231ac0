package resilience_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
)

// A breaker that opens on 5 failures in a row, or when half of at least 10
// outcomes within a minute failed: a downstream that drops every other call
// trips the second condition.
func ExampleFailureRate() {
	b := resilience.NewBreaker(resilience.BreakerSettings{
		ReadyToTrip: resilience.AnyOf(resilience.ConsecutiveFailures(5), resilience.FailureRate(0.5, 10)),
		Interval:    time.Minute,
		OnStateChange: func(name string, from, to resilience.State) {
			fmt.Printf("%s: %v -> %v\n", name, from, to)
		},
		Name: "resize",
	})
	for call := 1; b.State() == resilience.StateClosed; call++ {
		report, err := b.Acquire(context.Background())
		if err != nil {
			panic(err)
		}
		if call%2 == 0 {
			fmt.Println("call", call, "failed")
			report(resilience.OutcomeFailure)
		} else {
			report(resilience.OutcomeSuccess)
		}
	}
	// Output:
	// call 2 failed
	// call 4 failed
	// call 6 failed
	// call 8 failed
	// call 10 failed
	// resize: closed -> open
}

// Observe tells each change with its cause. A layer that shares the
// breaker with other processes (package fleet) publishes the breaker's own
// changes, and not those it applied from the others, which would echo them.
func ExampleBreaker_Observe() {
	b := resilience.NewBreaker(resilience.BreakerSettings{Name: "resize", ReadyToTrip: resilience.ConsecutiveFailures(1)})
	b.Observe(func(t resilience.Transition) {
		fmt.Printf("%s: %v -> %v, applied %v\n", t.Name, t.From, t.To, t.Applied)
	})
	report, _, _ := b.TryAcquire()
	report(resilience.OutcomeFailure) // its own trip
	b.Apply(false, time.Time{}, 0)    // another process's probe succeeded
	// Output:
	// resize: closed -> open, applied false
	// resize: open -> closed, applied true
}
