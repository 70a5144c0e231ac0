package executor

import "context"

// Attempt tells a node which run this is, so that it can detect a retry or
// a redelivery (for example to check whether a previous run already did
// its side effect).
type Attempt struct {
	// Number is the in-process attempt within this delivery, from 1.
	Number int
	// Delivery is how many times JetStream has delivered the task, from 1.
	// More than 1 means an earlier delivery failed, was handed back, or
	// its worker crashed.
	Delivery int
}

type attemptKey struct{}

// WithAttempt returns ctx carrying a.
func WithAttempt(ctx context.Context, a Attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// AttemptFrom returns the attempt a node is running as; the zero Attempt
// outside a consumer.
func AttemptFrom(ctx context.Context) Attempt {
	a, _ := ctx.Value(attemptKey{}).(Attempt)
	return a
}
