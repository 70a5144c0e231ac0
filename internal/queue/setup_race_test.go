package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// TestEnsureConcurrentlyOnCluster: several processes (connections) set up
// the same R3 streams, ledger and consumer at the same moment on a 3-node
// cluster, in rounds with fresh names. In a cluster a request that arrives
// while a just-created stream elects its leader gets no reply at all; every
// creator must still finish, quickly.
func TestEnsureConcurrentlyOnCluster(t *testing.T) {
	servers := natstest.Cluster(t, 3)
	url := natstest.URLs(servers)
	const rounds, creators = 3, 4
	for round := 1; round <= rounds; round++ {
		n := queue.Names{TaskStream: fmt.Sprintf("RACE%d_TASKS", round), TaskPrefix: fmt.Sprintf("race%d.tasks", round),
			DLQStream: fmt.Sprintf("RACE%d_DLQ", round), DLQPrefix: fmt.Sprintf("race%d.dlq", round), Consumer: fmt.Sprintf("race%d", round)}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var wg sync.WaitGroup
		errs := make([]error, creators)
		took := make([]time.Duration, creators)
		var logs logBuffer
		for i := range creators {
			wg.Go(func() {
				nc, err := nats.Connect(url)
				if err != nil {
					errs[i] = err
					return
				}
				defer nc.Close()
				js, _ := jetstream.New(nc)
				start := time.Now()
				if errs[i] = queue.EnsureStreams(ctx, js, n, queue.StreamOptions{Replicas: 3, Logger: logs.logger()}); errs[i] != nil {
					return
				}
				_, errs[i] = queue.EnsureConsumer(ctx, js, n, queue.ConsumerOptions{Logger: logs.logger()})
				took[i] = time.Since(start)
			})
		}
		wg.Wait()
		cancel()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, creator %d: %v\n%s", round, i, err, logs.String())
			}
		}
		t.Logf("round %d: %d creators done in %v; %d waited for a leader", round, creators, took,
			strings.Count(logs.String(), "elect a leader"))
	}
}

// TestRetrySetupWaitsOutUnansweredRequests: an attempt that gets no reply
// (the request blocks until its deadline) is retried with a new deadline,
// and the wait is logged.
func TestRetrySetupWaitsOutUnansweredRequests(t *testing.T) {
	var logs logBuffer
	calls := 0
	start := time.Now()
	err := queue.RetrySetup(context.Background(), logs.logger(), "task stream X", func(ctx context.Context) error {
		if calls++; calls == 1 {
			<-ctx.Done() // what nats.go does with a request nobody answers
			return fmt.Errorf("look up task stream X: %w", ctx.Err())
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Fatalf("took %v, want the first attempt's 1s deadline and a short pause", d)
	}
	for _, want := range []string{`msg="waiting for the JetStream cluster to elect a leader" for="task stream X"`, "no reply within 1", "went through after waiting"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestRetrySetupBoundedByContext: a cluster that never answers ends the
// wait when the caller's context does, with the last error and the
// context's; an error that waiting cannot fix returns at once.
func TestRetrySetupBoundedByContext(t *testing.T) {
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	calls := 0
	err := queue.RetrySetup(ctx, nil, "consumer c", func(context.Context) error { calls++; return unavailable })
	var apiErr *jetstream.APIError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &apiErr) || apiErr.Code != 503 || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("got %v", err)
	}
	if calls < 3 {
		t.Fatalf("%d attempts in 700ms, want retries with short pauses", calls)
	}

	calls = 0
	conflict := &jetstream.APIError{Code: 400, ErrorCode: 10065, Description: "subjects overlap with an existing stream"}
	err = queue.RetrySetup(context.Background(), nil, "task stream X", func(context.Context) error { calls++; return conflict })
	if !errors.Is(err, conflict) || calls != 1 {
		t.Fatalf("got %v after %d calls, want the conflict at once", err, calls)
	}
}
