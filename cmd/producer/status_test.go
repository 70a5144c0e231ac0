package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
)

// The process table: one line per process, ages as of now, every string
// from the bucket clipped and escaped.
func TestPrintStatusProcesses(t *testing.T) {
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	st := &fleet.Status{Consumer: "nodeq-workers", Stream: "NODEQ_TASKS", ProcessesLeftOut: 2, ProcessesMalformed: 1, Processes: []fleet.ProcessInfo{
		{ID: "vm/6242", Version: "0.1.0-dev", NodeTypes: []string{"echo", "fault", "sleep"}, Workers: 16, InFlight: 3, Prefetched: 2,
			Breaker: fleet.ProcessBreaker{Scope: "process", State: "closed", Since: now.Add(-12*time.Minute - 3*time.Second)}, LastSeen: now.Add(-2 * time.Second)},
		{ID: "evil\x1b]0;pwned\x07\u202e" + strings.Repeat("x", 500), Version: "\x1b[2J", NodeTypes: []string{strings.Repeat("t", 100)}, MoreNodeTypes: 7,
			Breaker: fleet.ProcessBreaker{Scope: "fleet", State: "open", Since: now.Add(-3 * time.Second)}, Paused: true, LastSeen: now.Add(-26 * time.Hour)},
		{ID: "other/1", Breaker: fleet.ProcessBreaker{Scope: "off"}, Stopping: true, LastSeen: now.Add(time.Second)},
	}}
	var out bytes.Buffer
	if err := printStatus(&out, st, now); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Logf("\n%s", text)
	for _, want := range []string{
		"processes              3 live, 2 more not listed, 1 unreadable entries skipped\n",
		"ID ", "VERSION", "NODE TYPES", "IN FLIGHT", "PREFETCHED", "HELD", "BREAKER", "PAUSED", "LAST SEEN",
		"echo,fault,sleep", "closed for 12m03s", "2s ago",
		`evil\x1b]0;pwned\x07\u202e`, `\x1b[2J`, " +7", "fleet open for 3s", "yes", "26h00m ago",
		"other/1", "off", "stopping", "0s ago",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if strings.ContainsAny(text, "\x1b\x07\u202e") || strings.Contains(text, strings.Repeat("x", statusIDWidth)) {
		t.Error("raw control characters or an unclipped ID reach the terminal")
	}
	for i, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if n := len([]rune(line)); n > 300 {
			t.Errorf("line %d has %d characters", i, n)
		}
	}
}

func TestProcessesSummary(t *testing.T) {
	for _, c := range []struct {
		st   fleet.Status
		want string
	}{
		{fleet.Status{}, "none announced"},
		{fleet.Status{ProcessesMalformed: 2}, "none announced, 2 unreadable entries skipped"},
		{fleet.Status{ProcessesUnknown: "permission\x1b denied"}, `unknown: permission\x1b denied`},
	} {
		if got := processesSummary(&c.st); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 0: "0s", 1500 * time.Millisecond: "1s", 59 * time.Second: "59s", time.Minute: "1m00s",
		5*time.Hour + 7*time.Minute: "5h07m", 50 * time.Hour: "2d02h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}

// producer status lists an announced process, in text and JSON, and drops
// it when it stops.
func TestStatusListsProcesses(t *testing.T) {
	url := startConsumer(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	snapshot := func() fleet.ProcessInfo {
		return fleet.ProcessInfo{Host: "vm", PID: 6242, Version: "0.1.0-dev", NodeTypes: []string{"echo", "fault"}, Workers: 4, Prefetch: 2,
			Breaker: fleet.ProcessBreaker{Scope: "process", State: "closed", Since: time.Now()}}
	}
	a, err := fleet.NewAnnouncer(js, queue.DefaultNames(), "vm/6242", snapshot)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var st fleet.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, errOut := runProducer(t, "", "status", "--json", "--nats-url", url)
		if code != exitOK || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status --json: exit %d\n%s%s", code, out, errOut)
		}
		if len(st.Processes) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process is not listed: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := st.Processes[0]; p.ID != "vm/6242" || p.PID != 6242 || p.Workers != 4 || p.Breaker.State != "closed" || p.Stream != "NODEQ_TASKS" {
		t.Fatalf("listed %+v", p)
	}
	code, out, _ := runProducer(t, "", "status", "--nats-url", url)
	if code != exitOK || !regexpLine(out, "processes", "1 live") || !regexpLine(out, "vm/6242", "0.1.0-dev", "echo,fault", "4", "0", "0", "0", "closed for", "no", "ago") {
		t.Fatalf("status:\n%s", out)
	}
	cancel()
	<-done
	done = make(chan struct{})
	close(done)
	code, out, _ = runProducer(t, "", "status", "--json", "--nats-url", url)
	if code != exitOK || json.Unmarshal([]byte(out), &st) != nil || len(st.Processes) != 0 {
		t.Fatalf("after the process stopped: %s", out)
	}
}
