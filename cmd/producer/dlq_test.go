package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/task"
)

// failSome publishes failing tasks through the CLI, one at a time, so that
// their records are stored in order.
func failSome(t *testing.T, url string) {
	t.Helper()
	nc, _ := nats.Connect(url)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i, args := range [][]string{
		{"publish", "fault", `{"w":0}`, "--param", "kind=Manifest", "--param", "message=width must be positive", "--node-id", "n1"},
		{"publish", "fault", `{"w":-1}`, "--param", "kind=Manifest", "--param", "message=width must be positive", "--node-id", "n2"},
		{"publish", "fault", "--param", "kind=Transport", "--param", "message=thumbs: 503", "--id", "t-transport"},
		{"publish", "fault", "--param", "panic=true", "--param", "message=nil map"},
	} {
		if code, _, errOut := runProducer(t, "", append(args, "--nats-url", url)...); code != exitOK {
			t.Fatalf("%v: %s", args, errOut)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, _ := js.Stream(t.Context(), "NODEQ_DLQ")
			info, _ := s.Info(t.Context())
			if info.State.Msgs == uint64(i+1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d records", info.State.Msgs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// cliCase is one producer invocation and the outcome it must have.
type cliCase struct {
	name   string // the outcome, as the subtest's name
	stdin  string
	args   []string
	code   int
	out    []string // stdout contains each
	errOut []string // stderr contains each
	check  func(t *testing.T, out string)
}

// runCases runs each case against the server at url, in order, as a subtest.
func runCases(t *testing.T, url string, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runProducer(t, c.stdin, append(c.args, "--nats-url", url)...)
			if code != c.code {
				t.Fatalf("%v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", c.args, code, c.code, out, errOut)
			}
			for _, w := range c.out {
				if !strings.Contains(out, w) {
					t.Fatalf("%v: stdout lacks %q:\n%s", c.args, w, out)
				}
			}
			for _, w := range c.errOut {
				if !strings.Contains(errOut, w) {
					t.Fatalf("%v: stderr lacks %q:\n%s", c.args, w, errOut)
				}
			}
			if c.check != nil {
				c.check(t, out)
			}
		})
	}
}

// TestDLQCommands runs each dlq command against the records of four
// failed tasks, one outcome per subtest; later subtests see what earlier
// ones changed (replay, purge).
func TestDLQCommands(t *testing.T) {
	url := startConsumer(t)
	failSome(t, url)
	dlq := func(args ...string) []string { return append([]string{"dlq"}, args...) }

	t.Run("list", func(t *testing.T) {
		runCases(t, url, []cliCase{
			{name: "newest first", args: dlq("list"), out: []string{"4 matching records, newest first"}, check: func(t *testing.T, out string) {
				if strings.Index(out, "nil map") > strings.Index(out, "width must be positive") {
					t.Fatalf("not newest first:\n%s", out)
				}
			}},
			{name: "filtered by kind", args: dlq("list", "--limit", "2", "--kind", "manifest"), out: []string{"2 matching records"}, check: func(t *testing.T, out string) {
				if strings.Contains(out, "503") {
					t.Fatalf("another kind listed:\n%s", out)
				}
			}},
			{name: "a short page names the next", args: dlq("list", "--limit", "1"), out: []string{"1 of 4 matching records, newest first; next page: --before-seq 4"}},
			{name: "the next page", args: dlq("list", "--limit", "1", "--before-seq", "4"), out: []string{"1 of 3 matching records, newest first; next page: --before-seq 3", "thumbs: 503"}},
			{name: "oldest first names the next", args: dlq("list", "--limit", "3", "--oldest"), out: []string{"3 records, oldest first; next page: --oldest --after-seq 3"}},
			{name: "the last oldest-first page", args: dlq("list", "--oldest", "--after-seq", "3"), out: []string{"1 record, oldest first\n"}},
			{name: "JSON", args: dlq("list", "--json", "--task-id", "t-transport"), check: func(t *testing.T, out string) {
				var item listItem
				if err := json.Unmarshal([]byte(out), &item); err != nil || item.ErrorKind != "Transport" || item.Seq != 3 {
					t.Fatalf("%v: %s", err, out)
				}
			}},
			{name: "nothing matches", args: dlq("list", "--node-type", "nope"), out: []string{"no matching records"}},
		})
	})
	t.Run("show", func(t *testing.T) {
		runCases(t, url, []cliCase{
			{name: "a record in full", args: dlq("show", "1"), out: []string{"reason          permanent_error", "node id         n1",
				"error           width must be positive", `"w": 0`, "Nats-Msg-Id:", "tasks.fault (stream NODEQ_TASKS, seq 1)"}},
			{name: "a panic's stack trace", args: dlq("show", "4"), out: []string{"stack trace:", "(*fault).execute"}},
			{name: "JSON", args: dlq("show", "3", "--json"), out: []string{`"seq":3`, `"error_kind":"Transport"`}},
			{name: "a record that is not there", args: dlq("show", "99"), code: exitFailed,
				errOut: []string{"producer: record 99: no such record in NODEQ_DLQ (replayed, purged or expired"}, check: func(t *testing.T, out string) {
					if out != "" {
						t.Fatalf("stdout %q", out)
					}
				}},
		})
	})
	t.Run("stats", func(t *testing.T) {
		runCases(t, url, []cliCase{
			{name: "groups", args: dlq("stats"), out: []string{"4 records in 3 groups; a group's records: dlq list --group "}, check: func(t *testing.T, out string) {
				if !regexpLine(out, "fault", "permanent_error", "Manifest", "2", "width must be positive") {
					t.Fatalf("no Manifest group:\n%s", out)
				}
			}},
			{name: "JSON", args: dlq("stats", "--json", "--kind", "Transport"), out: []string{`"total":1`}},
		})
	})
	t.Run("replay", func(t *testing.T) {
		runCases(t, url, []cliCase{
			{name: "dry run", args: dlq("replay", "--kind", "Manifest", "--dry-run"), out: []string{"dry run: would replay 2 records, skip 0", "nothing was changed", "width must be positive"}},
			{name: "replayed", args: dlq("replay", "--kind", "Manifest", "--rate", "100/s"), out: []string{"replayed 2, already replayed 0, skipped 0, ", "failed 0 in"}},
		})
	})
	t.Run("purge", func(t *testing.T) {
		runCases(t, url, []cliCase{
			{name: "answered no", stdin: "n\n", args: dlq("purge", "--kind", "Other"), code: exitFailed, errOut: []string{"Delete 1 matching record?", "nothing was deleted"}},
			{name: "answered yes", stdin: "y\n", args: dlq("purge", "--kind", "Other"), out: []string{"purged 1 record\n"}},
			{name: "purged", args: dlq("list", "--kind", "Other"), out: []string{"no matching records"}},
			{name: "nothing to ask about", args: dlq("purge", "--kind", "Other"), out: []string{"no matching records"}},
		})
	})
}

// regexpLine reports whether some line contains every field in order.
func regexpLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := line, true
		for _, f := range fields {
			i := strings.Index(rest, f)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(f):]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestPauseResumeStatus(t *testing.T) {
	url := startConsumer(t)
	code, out, errOut := runProducer(t, "", "pause", "--until", "1h", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "paused nodeq-workers until") {
		t.Fatalf("pause: %d %s %s", code, out, errOut)
	}
	runProducer(t, "", "publish", "echo", "x", "--nats-url", url)
	code, out, _ = runProducer(t, "", "status", "--nats-url", url)
	if code != 0 || !regexpLine(out, "pending", "1") || !regexpLine(out, "paused", "until 20") {
		t.Fatalf("status while paused:\n%s", out)
	}
	if code, out, _ = runProducer(t, "", "resume", "--nats-url", url); code != 0 || !strings.Contains(out, "resumed nodeq-workers") {
		t.Fatalf("resume: %s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ = runProducer(t, "", "status", "--json", "--nats-url", url)
		var st map[string]any
		if code == 0 && json.Unmarshal([]byte(out), &st) == nil && st["paused"] != true && st["pending"] == 0.0 && st["in_flight"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after resume: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, errOut := runProducer(t, "", "pause", "--until", "yesterday", "--nats-url", url); code != exitUsage || !strings.Contains(errOut, "--until") {
		t.Fatalf("bad --until: %d %s", code, errOut)
	}
}

// TestReplayRefusesForgedRecord: a record written by hand on dlq.echo that
// names the task stream's purge subject is refused by the dry run and the
// replay, which say why and exit non-zero; an operator's --to must name a
// node type.
func TestReplayRefusesForgedRecord(t *testing.T) {
	url := startConsumer(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	good, _ := task.EncodeMsgpack(&task.Envelope{ID: "x", NodeType: "echo"})
	data, _ := dlq.Encode(&dlq.Record{Reason: dlq.ReasonPermanent, NodeType: "echo", ErrorKind: "Manifest", Error: "e",
		Subject: "$JS.API.STREAM.PURGE.NODEQ_TASKS", Stream: "NODEQ_TASKS", Sequence: 1, Data: good})
	if _, err := js.Publish(t.Context(), "dlq.echo", data); err != nil {
		t.Fatal(err)
	}
	dlqRun := func(args ...string) (int, string, string) {
		return runProducer(t, "", append(append([]string{"dlq"}, args...), "--nats-url", url)...)
	}
	code, out, _ := dlqRun("replay", "--dry-run")
	if code != exitOK || !strings.Contains(out, "would replay 0 records, skip 0, refuse 1") || !strings.Contains(out, `"$JS.API.STREAM.PURGE.NODEQ_TASKS"`) {
		t.Fatalf("dry run (%d):\n%s", code, out)
	}
	code, out, errOut := dlqRun("replay", "-q")
	if code == exitOK || !strings.Contains(out, "refused 1") || !strings.Contains(errOut, "refused: record 1") {
		t.Fatalf("replay (%d):\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := dlqRun("replay", "--to", "$JS.API.STREAM.PURGE.NODEQ_TASKS"); code != exitUsage || !strings.Contains(errOut, "want a node type") {
		t.Fatalf("replay --to a server subject (%d): %s", code, errOut)
	}
	s, _ := js.Stream(t.Context(), "NODEQ_DLQ")
	if info, _ := s.Info(t.Context()); info.State.Msgs != 1 {
		t.Fatalf("dead-letter stream holds %d records, want the refused one kept", info.State.Msgs)
	}
}
