package consumer

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// What a process started into a pause or an open breaker warns about,
// one case per subtest.
func TestLogHeldAtStart(t *testing.T) {
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, c := range []struct {
		name       string
		info       *jetstream.ConsumerInfo
		snap       *resilience.Snapshot
		fleetScope bool
		want       []string // lines, in order; none: nothing logged
	}{
		{"running", &jetstream.ConsumerInfo{}, &resilience.Snapshot{State: resilience.StateClosed}, false, nil},
		{"info unknown, no breaker", nil, nil, false, nil},
		{"paused until resumed", &jetstream.ConsumerInfo{Paused: true, PauseRemaining: fleet.Forever}, nil, false,
			[]string{`level=WARN msg="fleet paused: no task is pulled until resumed (producer resume)" until=resumed`}},
		{"paused for a while", &jetstream.ConsumerInfo{Paused: true, PauseRemaining: time.Until(until)}, nil, false,
			[]string{`level=WARN msg="fleet paused: no task is pulled until ` + until.Format(time.RFC3339) + ` or producer resume"`}},
		{"opened by an operator", &jetstream.ConsumerInfo{}, &resilience.Snapshot{State: resilience.StateOpen, Until: until, Forced: true}, true,
			[]string{`level=WARN msg="circuit breaker open at start: no task starts until ` + until.Format(time.RFC3339) + ` or producer breaker close" until=` +
				until.Format(time.RFC3339) + " by=operator"}},
		{"open in the fleet, which is paused", &jetstream.ConsumerInfo{Paused: true, PauseRemaining: time.Until(until)},
			&resilience.Snapshot{State: resilience.StateOpen, Until: until}, true,
			[]string{`msg="fleet paused: no task is pulled until `, `msg="circuit breaker open at start: no task starts until ` + until.Format(time.RFC3339) + ` or producer breaker close"`, "by=fleet"}},
		{"half-open: a probe may run", nil, &resilience.Snapshot{State: resilience.StateHalfOpen}, true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			logHeldAtStart(slog.New(slog.NewTextHandler(&logs, nil)), c.info, c.snap, c.fleetScope)
			got := logs.String()
			if len(c.want) == 0 && got != "" {
				t.Fatalf("logged:\n%s", got)
			}
			rest := got
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("log lacks %s (in order):\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// A consumer started while the fleet is paused and an operator's breaker
// open is in force says so after "consumer ready", on a real server.
func TestStartIntoAPauseWarns(t *testing.T) {
	srv := natstest.Server(t)
	nc, err := nats.Connect(srv.ClientURL(), queue.ConsumerInbox())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	cfg := config.Default()
	cfg.Consumer.Workers, cfg.Consumer.PullWait = 1, 200*time.Millisecond
	names := cfg.QueueNames()
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := fleet.Pause(ctx, js, names, time.Now().Add(fleet.Forever)); err != nil {
		t.Fatal(err)
	}
	sent, _, err := fleet.SendCommand(ctx, js, names, "", fleet.Command{Op: fleet.OpOpen, Until: time.Now().Add(time.Hour), By: "tester", Reason: "maintenance"})
	if err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	c, err := New(ctx, Options{Config: cfg, Conn: nc, Logger: slog.New(slog.NewTextHandler(logs, nil)), Registry: reg, ID: "testhost/1"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	breakerLine := `msg="circuit breaker open at start: no task starts until ` + sent.Until.UTC().Truncate(time.Second).Format(time.RFC3339)
	registryWait(t, "the start-up warnings", func() bool { return strings.Contains(logs.String(), breakerLine) })
	l := logs.String()
	ready := strings.Index(l, `msg="consumer ready"`)
	paused := strings.Index(l, `level=WARN msg="fleet paused: no task is pulled until resumed (producer resume)"`)
	if ready < 0 || paused < ready || !strings.Contains(l, "by=operator") {
		t.Fatalf("want the pause and the open breaker warned about after consumer ready:\n%s", l)
	}
}
