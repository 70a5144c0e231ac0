package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// The summary says how many tasks were confirmed, how many not, and why.
func TestSummary(t *testing.T) {
	timeout := fmt.Errorf("publish task a: no PubAck within 3s: %w", jetstream.ErrAsyncPublishTimeout)
	cases := []struct {
		name    string
		s       summary
		line    string
		wantErr []string // substrings; none: no error
	}{
		{"all confirmed", summary{published: 3, duplicates: 1, elapsed: time.Second},
			"published 3, duplicates 1, failed 0, not confirmed 0 in 1s (3 tasks/s)", nil},
		{"failed lines", summary{published: 2, duplicates: 1, failed: 2, elapsed: time.Second},
			"published 2, duplicates 1, failed 2, not confirmed 0 in 1s", []string{"2 of 5 tasks were not published"}},
		{"no PubAck", summary{published: 1, unconfirmed: 4, unconfirmedErr: timeout, notSent: 5, elapsed: 3 * time.Second},
			"published 1, duplicates 0, failed 0, not confirmed 4, not sent 5 in 3s",
			[]string{"4 of 10 tasks not confirmed: no PubAck within 3s: is there a stream for tasks.>? start a consumer first",
				"they may or may not be stored", "5 not sent: publishing stopped at the first PubAck timeout"}},
		{"connection lost", summary{published: 7, unconfirmed: 2, unconfirmedErr: fmt.Errorf("publish task b: %w", nats.ErrDisconnected), failed: 1},
			"published 7, duplicates 0, failed 1, not confirmed 2 in 0s",
			[]string{"2 of 10 tasks not confirmed: publish task b: " + nats.ErrDisconnected.Error(), "1 of 10 tasks were not published"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.s.line(); !strings.HasPrefix(got, c.line) {
				t.Errorf("line %q, want prefix %q", got, c.line)
			}
			err := c.s.err(3*time.Second, "tasks")
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatalf("err %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("err nil")
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q lacks %q", err, w)
				}
			}
		})
	}
}

// publish --file against a server that never answers (no stream, a plain
// subscriber on the subjects) gives up after --timeout.
func TestPublishFileNoPubAck(t *testing.T) {
	srv := natstest.Server(t)
	nc, _ := natstest.Connect(t, srv)
	if _, err := nc.Subscribe("tasks.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(`{"id":"n1","node_type":"echo"}`+"\n"+`{"id":"n2","node_type":"echo"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	var out, errOut string
	go func() {
		defer close(done)
		code, out, errOut = runProducer(t, "", "publish", "--file", path, "--timeout", "300ms", "--nats-url", srv.ClientURL())
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("publish --file --timeout 300ms still waiting after 60s")
	}
	if code != exitFailed || !strings.Contains(out, "published 0, duplicates 0, failed 0, not confirmed 2 in") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, w := range []string{"task n1: not confirmed: ", "task n2: not confirmed: ", "2 of 2 tasks not confirmed: no PubAck within 300ms"} {
		if !strings.Contains(errOut, w) {
			t.Fatalf("stderr lacks %q: %q", w, errOut)
		}
	}
	// A single publish says the same about its deadline.
	code, _, errOut = runProducer(t, "", "publish", "echo", "x", "--timeout", "300ms", "--nats-url", srv.ClientURL())
	if code != exitFailed || !strings.Contains(errOut, "no PubAck within 300ms: is there a stream for tasks.>?") {
		t.Fatalf("single publish: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut = runProducer(t, "", "publish", "echo", "x", "--timeout", "0s"); code != exitUsage || !strings.Contains(errOut, "--timeout") {
		t.Fatalf("--timeout 0: exit %d, stderr %q", code, errOut)
	}
}

// The schedule a failing task goes through: in-process backoffs of each
// delivery and the delays between deliveries.
func TestRetryScheduleWait(t *testing.T) {
	for _, c := range []struct {
		name string
		p    resilience.Policy
		r    resilience.Redelivery
		want time.Duration
	}{
		// 3 deliveries × (100ms + 200ms) + 5s + 30s: the number README
		// and the --timeout help state.
		{"the defaults", resilience.DefaultPolicy(), resilience.DefaultRedelivery(), 35900 * time.Millisecond},
		{"one attempt, one delivery", resilience.None(), resilience.Redelivery{MaxDeliveries: 1}, 0},
		{"fixed, the last backoff repeats", resilience.Fixed(time.Second, 3),
			resilience.Redelivery{MaxDeliveries: 4, Backoff: []time.Duration{time.Minute, 2 * time.Minute}}, 4*2*time.Second + 5*time.Minute},
	} {
		if got := retryScheduleWait(c.p, c.r); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// publish --wait's default outlasts the default retry schedule by enough
// for the nine runs of a quick node and the pulls between them, so that a
// task failing on a transient error reports its failure, not a timeout. A
// change to either default that breaks this fails here; README states the
// schedule's number.
func TestDefaultWaitOutlastsTheSchedule(t *testing.T) {
	schedule := retryScheduleWait(resilience.DefaultPolicy(), resilience.DefaultRedelivery())
	if margin := defaultWaitTimeout - schedule; margin < 15*time.Second {
		t.Errorf("--wait's default %v leaves %v over the default retry schedule (%v): want at least 15s", defaultWaitTimeout, margin, schedule)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), schedule.String()+" of backoffs") {
		t.Errorf("README does not state the default retry schedule as %q", schedule.String()+" of backoffs")
	}
}

// --timeout's default and the PubAck wait depend on --wait: the result
// gets defaultWaitTimeout, the PubAck at most queue.DefaultAckTimeout.
func TestPublishTimeouts(t *testing.T) {
	for _, c := range []struct {
		args         []string
		timeout, ack time.Duration
	}{
		{[]string{"echo"}, queue.DefaultAckTimeout, queue.DefaultAckTimeout},
		{[]string{"echo", "--timeout", "2m"}, 2 * time.Minute, 2 * time.Minute},
		{[]string{"echo", "--wait"}, defaultWaitTimeout, queue.DefaultAckTimeout},
		{[]string{"echo", "--wait", "--timeout", "10m"}, 10 * time.Minute, queue.DefaultAckTimeout},
		{[]string{"echo", "--wait", "--timeout", "3s"}, 3 * time.Second, 3 * time.Second},
		{[]string{"--file", "x.jsonl"}, queue.DefaultAckTimeout, queue.DefaultAckTimeout},
		{[]string{"--file", "x.jsonl", "--timeout", "1s"}, time.Second, time.Second},
	} {
		c2, cmd := newPublishCommand(&app{})
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		c2.setArgs(cmd.Flags().Args())
		if err := c2.validate(); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if c2.timeout != c.timeout || c2.ackTimeout != c.ack {
			t.Errorf("%v: timeout %v, PubAck %v; want %v, %v", c.args, c2.timeout, c2.ackTimeout, c.timeout, c.ack)
		}
	}
}

func TestExitCodeNoResult(t *testing.T) {
	if got := exitCode(fmt.Errorf("%w for task x within 1s; the fleet is paused", errNoResult)); got != exitNoResult || exitNoResult != 3 {
		t.Fatalf("a --wait timeout exits %d, want 3", got)
	}
	if got := exitCode(fmt.Errorf("task x failed")); got != exitFailed {
		t.Fatalf("a failure exits %d, want %d", got, exitFailed)
	}
}

// publish --wait against a real server, when no result comes: exit 3,
// and the message says why from the fleet's state: no consumer process
// announced; one runs, but not the node type; the fleet paused.
func TestPublishWaitTimeoutSaysWhy(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	names := queue.DefaultNames()
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	wait := func(want ...string) string {
		t.Helper()
		code, out, errOut := runProducer(t, "", "publish", "resize", "{}", "--wait", "--timeout", "300ms", "--nats-url", srv.ClientURL())
		if code != exitNoResult || out != "" || !strings.Contains(errOut, "producer: no result for task ") || !strings.Contains(errOut, "within 300ms; ") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Errorf("stderr lacks %q:\n%s", w, errOut)
			}
		}
		return errOut
	}
	wait("no consumer process has announced itself", "1 task(s) pending")

	// A process announces itself, running echo only.
	a, err := fleet.NewAnnouncer(js, names, "vm/6242", func() fleet.ProcessInfo {
		return fleet.ProcessInfo{Host: "vm", PID: 6242, NodeTypes: []string{"echo", "sleep"}, Workers: 4,
			Breaker: fleet.ProcessBreaker{Scope: "process", State: "closed"}}
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(actx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if l, err := fleet.ListProcesses(ctx, js, names); err == nil && len(l.Processes) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process is not listed")
		}
	}
	wait("1 consumer process(es) run, but none runs node type resize (they run echo,sleep)", "2 task(s) pending")

	if err := fleet.Pause(ctx, js, names, time.Now().Add(fleet.Forever)); err != nil {
		t.Fatal(err)
	}
	wait("the fleet is paused until resumed: no consumer pulls tasks (producer resume ends it)", "3 task(s) pending")
	until := time.Now().Add(time.Hour)
	if err := fleet.Pause(ctx, js, names, until); err != nil {
		t.Fatal(err)
	}
	errOut := wait("the fleet is paused until ", ": no consumer pulls tasks (producer resume ends it)", "4 task(s) pending")
	_, said, _ := strings.Cut(errOut, "the fleet is paused until ")
	said = said[:min(len(said), len("2006-01-02T15:04:05Z"))]
	if got, err := time.Parse(time.RFC3339, said); err != nil || got.Sub(until).Abs() > time.Minute {
		t.Fatalf("paused until %q, want about %v", said, until.UTC())
	}
}
