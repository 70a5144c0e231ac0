package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeq/nodeq/internal/queue"
)

// TestUsageErrors: every mistake on the command line (a bad flag value, a
// bad name, options that conflict, an unknown command or flag, arguments a
// command does not take) exits 2 with a message that names the mistake,
// before anything connects: the URL points at no server, so a command
// that got as far as connecting would exit 1.
func TestUsageErrors(t *testing.T) {
	payload := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(payload, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string // in stderr
	}{
		// Commands and flags cobra does not know.
		{"unknown command", []string{"pubish"}, `unknown command "pubish" for "producer"; did you mean publish?`},
		{"unknown dlq command", []string{"dlq", "lst"}, `unknown command "lst" for "producer dlq"; did you mean list?`},
		{"unknown flag", []string{"status", "--bogus"}, "unknown flag: --bogus"},
		{"unknown shorthand", []string{"dlq", "list", "-z"}, "unknown shorthand flag: 'z'"},
		{"flag without its value", []string{"dlq", "list", "--limit"}, "flag needs an argument"},
		{"not a number", []string{"dlq", "list", "--limit", "many"}, `invalid argument "many"`},
		{"arguments status does not take", []string{"status", "now"}, `unknown command "now" for "producer status"`},
		{"arguments list does not take", []string{"dlq", "list", "7"}, `unknown command "7" for "producer dlq list"`},
		{"show without SEQ", []string{"dlq", "show"}, "want one SEQ"},

		// Bad values.
		{"publish without a node type", []string{"publish"}, "want NODE_TYPE"},
		{"an invalid node type", []string{"publish", "a.b", "x"}, "invalid node type"},
		{"a param without a value", []string{"publish", "echo", "x", "--param", "novalue"}, "--param \"novalue\": want KEY=VALUE"},
		{"a zero timeout", []string{"publish", "echo", "x", "--timeout", "0s"}, "--timeout 0s"},
		{"a negative deadline", []string{"publish", "echo", "x", "--deadline", "-1s"}, "--deadline -1s"},
		{"a zero window", []string{"publish", "--file", payload, "--window", "0"}, "--window 0"},
		{"pause until the past", []string{"pause", "--until", "yesterday"}, "--until \"yesterday\""},
		{"a page of none", []string{"dlq", "list", "--limit", "0"}, "--limit 0: want 1 to 100000"},
		{"a page too large", []string{"dlq", "list", "-n", "100001"}, "--limit 100001"},
		{"a time that is none", []string{"dlq", "list", "--since", "yesterday"}, "--since: \"yesterday\" is not a time"},
		{"a filter node type with a dot", []string{"dlq", "stats", "--node-type", "a.b"}, `--node-type "a.b" is not a node type`},
		{"SEQ not a number", []string{"dlq", "show", "x"}, `SEQ "x": want a record sequence number`},
		{"SEQ 0", []string{"dlq", "show", "0"}, `SEQ "0"`},
		{"a rate that is none", []string{"dlq", "replay", "--rate", "fast"}, `--rate "fast"`},
		{"a rate of zero", []string{"dlq", "replay", "--rate", "0/s"}, `--rate "0/s"`},
		{"a rate per fortnight", []string{"dlq", "replay", "--rate", "5/w"}, `--rate "5/w"`},
		{"a negative replay limit", []string{"dlq", "replay", "--limit", "-1"}, "--limit -1"},
		{"a negative replay cap", []string{"dlq", "replay", "--max-replays", "-1"}, "--max-replays -1"},
		{"replay to a server subject", []string{"dlq", "replay", "--to", "$JS.API.STREAM.PURGE.NODEQ_TASKS"}, "want a node type"},
		{"replay to a wildcard", []string{"dlq", "replay", "--to", "tasks.>"}, "want a node type"},
		{"replay to another prefix", []string{"dlq", "replay", "--to", "tasks.resize", "--task-prefix", "prod"}, "want a node type or prod.<node_type>"},

		// Bad names, each named by its flag.
		{"a task stream with a dot", []string{"status", "--task-stream", "A.B"}, "--task-stream: task_stream \"A.B\""},
		{"a consumer with a space", []string{"pause", "--consumer", "my workers"}, "--consumer: consumer \"my workers\""},
		{"an empty consumer", []string{"resume", "--consumer", ""}, "--consumer is empty"},
		{"a dlq stream with a wildcard", []string{"dlq", "list", "--dlq-stream", "DLQ*"}, "--dlq-stream: dlq_stream \"DLQ*\""},
		{"a dlq prefix with a wildcard", []string{"dlq", "stats", "--dlq-prefix", "dlq.>"}, "--dlq-prefix: dlq_prefix \"dlq.>\""},
		{"a task prefix ending in a dot", []string{"publish", "echo", "--task-prefix", "tasks."}, "--task-prefix: task_prefix \"tasks.\""},
		{"the task prefix is the dlq prefix", []string{"dlq", "replay", "--task-prefix", "dlq"}, `--task-prefix "dlq" and --dlq-prefix "dlq"`},
		{"both prefixes the same", []string{"status", "--task-prefix", "x", "--dlq-prefix", "x"}, `--task-prefix "x" and --dlq-prefix "x"`},

		// Options that conflict.
		{"--file with arguments", []string{"publish", "--file", payload, "echo"}, "--file takes no"},
		{"--file with --wait", []string{"publish", "--file", payload, "--wait"}, "--wait works with a single task"},
		{"--file with --param", []string{"publish", "--file", payload, "--param", "a=1"}, "with --file each line is a whole task"},
		{"a payload twice", []string{"publish", "echo", "x", "--payload-file", payload}, "not both"},
		{"an empty sequence range", []string{"dlq", "list", "--after-seq", "5", "--before-seq", "6"}, "no sequence lies between them"},
		{"since after until", []string{"dlq", "purge", "--since", "1h", "--until", "2h"}, "--since 1h is not before --until 2h"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runProducer(t, "", append([]string{"--nats-url", "nats://127.0.0.1:1"}, c.args...)...)
			if code != exitUsage || !strings.HasPrefix(errOut, "producer: ") || !strings.Contains(errOut, c.want) || out != "" {
				t.Fatalf("%q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, out, errOut, exitUsage, c.want)
			}
		})
	}
}

// TestNameFlags: the name flags resolve to queue.Names once, with the
// consumers' defaults; a bad name is a usage error that names its flag.
func TestNameFlags(t *testing.T) {
	d := queue.DefaultNames()
	defaults := nameFlags{d.TaskStream, d.TaskPrefix, d.DLQStream, d.DLQPrefix, d.Consumer}
	with := func(change func(*nameFlags)) nameFlags { n := defaults; change(&n); return n }
	cases := []struct {
		name  string
		flags nameFlags
		want  queue.Names
		err   string // the flag the error names; "" for none
	}{
		{"defaults", defaults, d, ""},
		{"all set", nameFlags{"T", "prod.tasks", "D", "prod.dlq", "c"}, queue.Names{TaskStream: "T", TaskPrefix: "prod.tasks", DLQStream: "D", DLQPrefix: "prod.dlq", Consumer: "c"}, ""},
		{"prefixes swapped", with(func(n *nameFlags) { n.taskPrefix, n.dlqPrefix = "dlq", "tasks" }), queue.Names{TaskStream: d.TaskStream, TaskPrefix: "dlq", DLQStream: d.DLQStream, DLQPrefix: "tasks", Consumer: d.Consumer}, ""},
		{"task stream", with(func(n *nameFlags) { n.taskStream = "a b" }), queue.Names{}, "--task-stream"},
		{"task prefix", with(func(n *nameFlags) { n.taskPrefix = "*" }), queue.Names{}, "--task-prefix"},
		{"dlq stream", with(func(n *nameFlags) { n.dlqStream = "x/y" }), queue.Names{}, "--dlq-stream"},
		{"dlq prefix", with(func(n *nameFlags) { n.dlqPrefix = "a..b" }), queue.Names{}, "--dlq-prefix"},
		{"consumer", with(func(n *nameFlags) { n.consumer = "c.d" }), queue.Names{}, "--consumer"},
		{"empty", with(func(n *nameFlags) { n.dlqStream = "" }), queue.Names{}, "--dlq-stream"},
		// A bad stream name is found even when the task prefix is the dlq prefix's default.
		{"bad stream beside a swapped prefix", with(func(n *nameFlags) { n.taskPrefix, n.dlqPrefix, n.taskStream = "dlq", "tasks", "a.b" }), queue.Names{}, "--task-stream"},
		{"prefixes clash", with(func(n *nameFlags) { n.dlqPrefix = "tasks" }), queue.Names{}, "--task-prefix \"tasks\" and --dlq-prefix"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.flags.resolve()
			if c.err == "" {
				if err != nil || got != c.want {
					t.Fatalf("resolve() = %+v, %v; want %+v", got, err, c.want)
				}
				return
			}
			var usage *usageError
			if !errors.As(err, &usage) || !strings.HasPrefix(err.Error(), c.err) {
				t.Fatalf("resolve() error %v (%T); want a usage error naming %s", err, err, c.err)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("connection refused"), exitFailed},
		{usagef("--limit 0"), exitUsage},
		{fmt.Errorf("context: %w", usagef("--limit 0")), exitUsage},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestHelp: the help leads an operator to what the tool does, and a group
// alone prints its help.
func TestHelp(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"root", []string{"--help"}, []string{"nodeq's operator tool", "publishes tasks", "dead-letter queue", "Examples:",
			"producer dlq replay --kind Transport --dry-run", "--task-stream", "--dlq-prefix", "--consumer", "Exit status: 0"}},
		{"no command", nil, []string{"nodeq's operator tool", "Available Commands:"}},
		{"dlq alone", []string{"dlq"}, []string{"Inspect, replay and purge the dead-letter stream", "replay", "--kind"}},
		{"a command's flags include the names", []string{"status", "--help"}, []string{"--task-stream", "--consumer", "--dlq-stream"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runProducer(t, "", c.args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Fatalf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
