package consumer

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/version"
)

// A running consumer is listed in the process registry with its
// configuration and its breaker; a trip is written at once; a clean stop
// removes the entry.
func TestRunAnnouncesTheProcess(t *testing.T) {
	srv := natstest.Server(t)
	nc, err := nats.Connect(srv.ClientURL(), queue.ConsumerInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, js := natstest.Connect(t, srv)
	cfg := config.Default()
	cfg.Consumer.Workers, cfg.Consumer.Prefetch, cfg.Consumer.PullWait = 3, 1, 200*time.Millisecond
	cfg.Consumer.ShutdownTimeout = 2 * time.Second // then the sleeping task is interrupted
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	_ = reg.Register(executor.Node{Type: "sleep", Executor: executor.Sleep(time.Minute)})
	breaker := resilience.NewBreaker(resilience.BreakerSettings{ReadyToTrip: resilience.ConsecutiveFailures(1), Cooldown: time.Minute})
	c, err := New(context.Background(), Options{Config: cfg, Conn: nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg, ID: "testhost/1", Breaker: breaker})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	names := cfg.QueueNames()
	list := func() fleet.ProcessList {
		t.Helper()
		l, err := fleet.ListProcesses(context.Background(), js, names)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	var p fleet.ProcessInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		if l := list(); len(l.Processes) == 1 {
			p = l.Processes[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer is not listed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	host, _ := os.Hostname()
	if p.ID != "testhost/1" || p.Host != host || p.PID != os.Getpid() || p.Version != version.String() ||
		strings.Join(p.NodeTypes, ",") != "echo,sleep" || p.Workers != 3 || p.Prefetch != 1 || p.InFlight != 0 ||
		p.Breaker.Scope != "process" || p.Breaker.State != "closed" || p.Paused || p.Stopping ||
		p.Stream != names.TaskStream || p.Consumer != names.Consumer {
		t.Fatalf("listed %+v", p)
	}

	// A task runs; then the breaker trips: the entry says so at once,
	// open, paused, with the task in flight.
	sleep := &task.Envelope{ID: "s1", NodeType: "sleep", Params: task.Params{"duration": "30s"}}
	if _, err := queue.NewPublisher(js, names).Publish(context.Background(), sleep); err != nil {
		t.Fatal(err)
	}
	registryWait(t, "the task to run", func() bool { return c.puller.InFlight() == 1 })
	tripped := time.Now()
	report, _, ok := breaker.TryAcquire()
	if !ok {
		t.Fatal("the breaker refused")
	}
	report(resilience.OutcomeFailure)
	registryWait(t, "the trip to be listed", func() bool {
		l := list()
		return len(l.Processes) == 1 && l.Processes[0].Breaker.State == "open" && l.Processes[0].Paused && l.Processes[0].InFlight == 1
	})
	if since := list().Processes[0].Breaker.Since; since.Before(tripped.Add(-time.Second)) || since.After(time.Now()) {
		t.Fatalf("open since %v, tripped at %v", since, tripped)
	}

	// Shutdown: stopping while the task runs out the shutdown timeout;
	// then gone.
	cancel()
	registryWait(t, "the process to say it stops", func() bool {
		l := list()
		return len(l.Processes) == 1 && l.Processes[0].Stopping
	})
	if err := <-done; err != nil && err != ErrInterrupted {
		t.Fatal(err)
	}
	done <- nil // for the deferred wait
	if l := list(); len(l.Processes) != 0 {
		t.Fatalf("after Run returned: %+v", l)
	}
}

func registryWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
