package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// TestBreakerUsageErrors: a bad duration, process, reason or who exits 2
// before anything connects (the URL points at no server: a command that
// got as far as connecting would exit 1).
func TestBreakerUsageErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"open without --for", []string{"breaker", "open"}, "--for is required"},
		{"open for zero", []string{"breaker", "open", "--for", "0s"}, `--for "0s": want a duration from 1s to 24h0m0s`},
		{"open for a negative time", []string{"breaker", "open", "--for", "-5m"}, `--for "-5m"`},
		{"open for less than a second", []string{"breaker", "open", "--for", "500ms"}, `--for "500ms"`},
		{"open for more than a day", []string{"breaker", "open", "--for", "24h1s"}, `--for "24h1s"`},
		{"open for a year", []string{"breaker", "open", "--for", "8760h"}, `--for "8760h"`},
		{"open for a word", []string{"breaker", "open", "--for", "soon"}, `--for "soon"`},
		{"an empty process", []string{"breaker", "open", "--for", "1m", "--process", ""}, "--process: the process ID is empty"},
		{"a process with an escape", []string{"breaker", "close", "--process", "h/1\x1b[2J"}, "--process: process ID"},
		{"a process too long", []string{"breaker", "close", "--process", strings.Repeat("p", fleet.MaxProcessID+1)}, "more than 256"},
		{"a reason with a newline", []string{"breaker", "close", "--reason", "a\nb"}, "--reason \"a\\nb\" has a control or invisible character (U+000A)"},
		{"a reason with a bidi override", []string{"breaker", "close", "--reason", "ok\u202e"}, "(U+202E)"},
		{"a reason too long", []string{"breaker", "close", "--reason", strings.Repeat("r", fleet.MaxReason+1)}, "--reason is 513 bytes"},
		{"nobody", []string{"breaker", "close", "--by", ""}, "--by is empty"},
		{"who with a control character", []string{"breaker", "open", "--for", "1m", "--by", "x\x07"}, "--by"},
		{"close takes no --for", []string{"breaker", "close", "--for", "1m"}, "unknown flag: --for"},
		{"arguments", []string{"breaker", "open", "10m"}, `unknown command "10m" for "producer breaker open"`},
		{"an unknown breaker command", []string{"breaker", "opne"}, "did you mean open?"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runProducer(t, "", append([]string{"--nats-url", "nats://127.0.0.1:1"}, c.args...)...)
			if code != exitUsage || !strings.HasPrefix(errOut, "producer: ") || !strings.Contains(errOut, c.want) || out != "" {
				t.Fatalf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, out, errOut, exitUsage, c.want)
			}
		})
	}
}

// TestBreakerCommands: open and close write the command a consumer reads,
// for every process or one, and say so; reset is close.
func TestBreakerCommands(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	ctx := context.Background()
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	read := func(process string) fleet.Command {
		t.Helper()
		kv, err := js.KeyValue(ctx, fleet.ControlBucket)
		if err != nil {
			t.Fatal(err)
		}
		entry, err := kv.Get(ctx, fleet.ControlKey(names, process))
		if err != nil {
			t.Fatal(err)
		}
		var c fleet.Command
		if err := json.Unmarshal(entry.Value(), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	producer := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		env := func(k string) string { return map[string]string{"USER": "alice"}[k] }
		code := run(ctx, append(args, "--nats-url", srv.ClientURL()), strings.NewReader(""), &out, &errb, env)
		if code != exitOK {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errb.String())
		}
		return out.String()
	}

	before := time.Now()
	out := producer("breaker", "open", "--for", "10m", "--reason", "db maintenance")
	t.Logf("breaker open:\n%s", out)
	c := read("")
	if c.Op != fleet.OpOpen || c.Until.Before(before.Add(10*time.Minute)) || c.Until.After(time.Now().Add(10*time.Minute)) ||
		!strings.HasPrefix(c.By, "alice@") || c.Reason != "db maintenance" || c.ID == "" {
		t.Fatalf("stored %+v", c)
	}
	for _, want := range []string{"circuit breaker of every process of nodeq-workers on NODEQ_TASKS: open until " + c.Until.Format(time.RFC3339),
		"by " + c.By + " (db maintenance)", "command " + c.ID + " stored in nodeq_control as NODEQ_TASKS.nodeq-workers.all",
		"act on it within a second", `"circuit breaker opened by operator"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out = producer("breaker", "reset", "--process", "ip-10-0-0-7/4242", "--by", "bob@ops")
	c = read("ip-10-0-0-7/4242")
	if c.Op != fleet.OpClose || !c.Until.IsZero() || c.By != "bob@ops" {
		t.Fatalf("stored %+v", c)
	}
	if !strings.Contains(out, "circuit breaker of process ip-10-0-0-7/4242 of nodeq-workers on NODEQ_TASKS: closed, by bob@ops\n") ||
		!strings.Contains(out, "NODEQ_TASKS.nodeq-workers.process.ip-10-0-0-7=2F4242") {
		t.Fatalf("output:\n%s", out)
	}
	if c := read(""); c.Op != fleet.OpOpen {
		t.Fatalf("the command for one process replaced the one for all: %+v", c)
	}
}
