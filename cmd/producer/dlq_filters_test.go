package main

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nodeq/nodeq/internal/dlq"
)

// TestDLQClosedSetFilters: a reason or an error kind that no record can
// have is a usage error naming the valid values, never a filter that
// silently matches nothing; so is a malformed group ID.
func TestDLQClosedSetFilters(t *testing.T) {
	const nowhere = "nats://127.0.0.1:1" // usage errors come before connecting
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--reason", "unknown-node-type"}, `--reason "unknown-node-type" is not a reason; did you mean unknown_node_type?`},
		{[]string{"replay", "--reason", "Retries-Exhausted", "--dry-run"}, "did you mean retries_exhausted?"},
		{[]string{"stats", "--reason", "poison,nope"}, `--reason "nope" is not a reason: want one of invalid, unknown_node_type, permanent_error, retries_exhausted, deadline_exceeded, poison`},
		{[]string{"list", "--kind", "NoSuchKind"}, `--kind "NoSuchKind" is not an error kind: want one of Other, Execution, PythonVm, Wasm, Transport, Io, Manifest, Marshaling, Serialization (any case)`},
		{[]string{"purge", "--kind", "transport,timeout", "--yes"}, `--kind "timeout"`},
		{[]string{"list", "--group", "resize"}, `--group "resize" is not a group ID`},
		{[]string{"replay", "--group", "3f2a9c81d0e", "--dry-run"}, `--group "3f2a9c81d0e"`},
		{[]string{"list", "--kind", strings.Repeat("\x1b[2J", 1000)}, `--kind "\x1b[2J`},
	} {
		code, out, errOut := runProducer(t, "", append(append([]string{"dlq"}, c.args...), "--nats-url", nowhere)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, c.want) || len(errOut) > 400 {
			t.Errorf("dlq %.60q: exit %d, stderr %q", c.args, code, errOut)
		}
	}

	url, js := serverWithStreams(t)
	putRecord(t, js, "echo", failure("f-1", dlq.ReasonExhausted, "Transport", "down"))
	runCases(t, url, []cliCase{
		{name: "kinds in any case", args: []string{"dlq", "list", "--kind", "TRANSPORT,manifest"}, out: []string{"1 matching record, newest first"}},
		{name: "exact reasons", args: []string{"dlq", "stats", "--reason", "retries_exhausted,poison"}, out: []string{"1 record in 1 group"}},
	})
}

// TestDLQRowsStayNarrow: a hand-written record with a 257-byte task ID and
// node type full of escape sequences and a 5,000-byte error cannot stretch
// the rows of list, replay --dry-run or stats: each cell is cleaned, then
// cut. A refusal that quotes a huge field is cut too.
func TestDLQRowsStayNarrow(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	longID := strings.Repeat("\x1b[2J", 64) + "x" // 257 bytes, each ESC printed as 4 characters
	longError := strings.Repeat("\x07ab ", 1250)  // 5,000 bytes
	if len(longID) != 257 || len(longError) != 5000 {
		t.Fatal("test data")
	}
	r := failure(longID, dlq.ReasonExhausted, "Transport", longError)
	putRecord(t, js, "echo", r)
	putRecord(t, js, "echo", failure("short", dlq.ReasonExhausted, "Transport", "down"))
	weird := failure("weird", strings.Repeat("\u202e", 300), strings.Repeat("K\x1b", 300), longError)
	weird.NodeType = "echo" + strings.Repeat("\x9b", 300)
	putRecord(t, js, "echo", weird) // refused: its node type is not its subject's

	// The widest a row may be: every column at its cut, plus the spaces between.
	const widest = 5 + 19 + 64 + 16 + 24 + 7 + 64 + 60 + 7*2
	for _, args := range [][]string{{"list"}, {"replay", "--dry-run"}, {"stats"}} {
		code, out, errOut := producer("", append([]string{"dlq"}, args...)...)
		if code != exitOK {
			t.Fatalf("dlq %v: exit %d: %s", args, code, errOut)
		}
		for _, line := range strings.Split(out, "\n") {
			limit := widest
			if strings.HasPrefix(line, "refused: ") {
				limit = maxErrorLine
			}
			if n := utf8.RuneCountInString(line); n > limit {
				t.Errorf("dlq %v: a line of %d characters (at most %d):\n%s", args, n, limit, line)
			}
		}
		// The short record's row is as narrow as the long one's: they share the columns.
		if args[0] != "stats" && !regexpLine(out, "echo", "Transport", "retries_exhausted", "0", `\x1b[2J\x1b[2J`, "…", `\x07ab \x07ab`, "…") {
			t.Errorf("dlq %v: the long values are not shown cut:\n%s", args, out)
		}
	}
}

// TestDLQCommandsLeaveNoConsumer: the commands that read the dead-letter
// stream leave no consumer on it behind them.
func TestDLQCommandsLeaveNoConsumer(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	for _, id := range []string{"c-1", "c-2", "c-3"} {
		putRecord(t, js, "echo", failure(id, dlq.ReasonExhausted, "Transport", "down"))
	}
	st, err := js.Stream(t.Context(), "NODEQ_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"list"}, {"list", "--limit", "1", "--oldest"}, {"list", "--kind", "Transport", "--json"},
		{"stats"}, {"stats", "--kind", "Transport"},
		{"replay", "--dry-run"}, {"replay", "--dry-run", "--limit", "1"},
	} {
		if code, _, errOut := producer("", append([]string{"dlq"}, args...)...); code != exitOK {
			t.Fatalf("dlq %v: exit %d: %s", args, code, errOut)
		}
		var left []string
		names := st.ConsumerNames(t.Context())
		for name := range names.Name() {
			left = append(left, name)
		}
		if err := names.Err(); err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("after dlq %v, consumers on the dead-letter stream: %v", args, left)
		}
	}
}
