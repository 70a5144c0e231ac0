package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nodeq/nodeq/internal/dlq"
)

// TestDLQSeqArgs: replay and purge act on the records named by sequence,
// the filters still apply, and a sequence with no record stops the command
// before it changes anything.
func TestDLQSeqArgs(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	putRecord(t, js, "echo", failure("s-1", dlq.ReasonExhausted, "Transport", "down")) // 1
	undecodable := &dlq.Record{Reason: dlq.ReasonInvalid, NodeType: "echo", ErrorKind: "Marshaling", Error: "malformed msgpack",
		Subject: "tasks.echo", Stream: "NODEQ_TASKS", Data: []byte("\xc1 not a task")}
	putRecord(t, js, "echo", undecodable)                                                    // 2: no task ID
	putRecord(t, js, "echo", failure("s-3", dlq.ReasonExhausted, "Transport", "down"))       // 3
	putRecord(t, js, "echo", failure("s-4", dlq.ReasonPermanent, "Manifest", "bad width"))   // 4
	putRecord(t, js, "echo", failure("s-5", dlq.ReasonPermanent, "Manifest", "bad height"))  // 5
	putRecord(t, js, "echo", failure("s-6", dlq.ReasonExhausted, "Transport", "still down")) // 6
	left := func(t *testing.T, want ...uint64) {
		t.Helper()
		code, out, errOut := producer("", "dlq", "list", "--oldest")
		if got := tableSeqs(t, out); code != exitOK || !slices.Equal(got, want) {
			t.Fatalf("records left: %v, want %v: %s", got, want, errOut)
		}
	}

	runCases(t, url, []cliCase{
		{name: "a missing record stops a dry run", args: []string{"dlq", "replay", "2", "99", "--dry-run"}, code: exitFailed,
			errOut: []string{"producer: record 99: no such record in NODEQ_DLQ (replayed, purged or expired, or never stored: see dlq list); nothing was replayed\n"},
			check: func(t *testing.T, out string) {
				if out != "" {
					t.Fatalf("stdout %q", out)
				}
			}},
		{name: "every missing record is named", args: []string{"dlq", "replay", "98", "1", "99", "7", "-q"}, code: exitFailed,
			errOut: []string{"producer: records 7, 98 and 99: no such record in NODEQ_DLQ"}},
		{name: "a purge with a missing record deletes nothing", args: []string{"dlq", "purge", "2", "99", "--yes"}, code: exitFailed,
			errOut: []string{"record 99: no such record", "nothing was deleted"}},
		{name: "a dry run of named records", args: []string{"dlq", "replay", "3", "1", "--dry-run"}, out: []string{"dry run: would replay 2 records, skip 0, refuse 0"},
			check: func(t *testing.T, out string) {
				if got := tableSeqs(t, out); !slices.Equal(got, []uint64{1, 3}) {
					t.Fatalf("listed %v", got)
				}
			}},
		{name: "a purge of a record asks first", stdin: "n\n", args: []string{"dlq", "purge", "2"}, code: exitFailed,
			errOut: []string{"Delete 1 matching record? This cannot be undone. [y/N] ", "purge cancelled; nothing was deleted"}},
	})
	left(t, 1, 2, 3, 4, 5, 6)

	runCases(t, url, []cliCase{
		{name: "a record without a task ID is purged by its sequence", stdin: "y\n", args: []string{"dlq", "purge", "2"}, out: []string{"purged 1 record\n"}},
		{name: "filters narrow the named records", args: []string{"dlq", "replay", "1", "4", "--kind", "Transport", "-q"}, out: []string{"replayed 1, already replayed 0, skipped 0, refused 0, failed 0"}},
		{name: "a purge of named records and a filter", args: []string{"dlq", "purge", "3", "4", "5", "--reason", "permanent_error", "--yes"}, out: []string{"purged 2 records\n"}},
	})
	left(t, 3, 6)

	runCases(t, url, []cliCase{
		{name: "another node type is refused", args: []string{"dlq", "replay", "3", "--to", "other", "-q"}, code: exitFailed,
			out:    []string{"refused 1"},
			errOut: []string{`refused: record 3 holds a task of node type "echo"`, "dead-letter it again", "1 record could not be replayed"}},
	})
	left(t, 3, 6)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", "0"}, `SEQ "0": want a record sequence number`},
		{[]string{"replay", "1x", "--dry-run"}, `SEQ "1x"`},
		{[]string{"purge", "18446744073709551616", "--yes"}, `SEQ "18446744073709551616"`},
		{[]string{"purge", "--yes", "--", "-3"}, `SEQ "-3"`},
		{[]string{"purge", strings.Repeat("9", 500), "--yes"}, `SEQ "99999`},
	} {
		code, out, errOut := producer("", append([]string{"dlq"}, c.args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, c.want) || len(errOut) > 200 {
			t.Errorf("dlq %.40q: exit %d, stderr %q", c.args, code, errOut)
		}
	}
	many := make([]string, maxSeqArgs+1)
	for i := range many {
		many[i] = "1"
	}
	if code, _, errOut := producer("", append([]string{"dlq", "replay"}, many...)...); code != exitUsage || !strings.Contains(errOut, "at most 1000 at a time") {
		t.Errorf("too many SEQs: exit %d, %s", code, errOut)
	}
	left(t, 3, 6)
}

// TestDLQShow: show prints the record's trace ID when it has one; its
// JSON keys are snake_case.
func TestDLQShow(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	traced := failure("traced", dlq.ReasonExhausted, "Transport", "down")
	traced.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	traced.Headers["traceparent"] = []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	putRecord(t, js, "echo", traced)
	putRecord(t, js, "echo", failure("untraced", dlq.ReasonExhausted, "Transport", "down"))

	code, out, errOut := producer("", "dlq", "show", "1")
	if code != exitOK || !regexpLine(out, "trace id", "4bf92f3577b34da6a3ce929d0e0e4736") || !strings.Contains(out, "traceparent: 00-4bf92f") {
		t.Fatalf("show 1: exit %d:\n%s%s", code, out, errOut)
	}
	if code, out, _ := producer("", "dlq", "show", "2"); code != exitOK || strings.Contains(out, "trace id") {
		t.Fatalf("show 2: exit %d:\n%s", code, out)
	}

	code, out, _ = producer("", "dlq", "show", "1", "--json")
	if got := keysOf(t, []byte(out)); code != exitOK || !slices.Equal(got, []string{"payload", "record", "seq", "stored", "task"}) {
		t.Fatalf("show --json keys %v:\n%s", got, out)
	}
	var parts map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &parts); err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"record", "task"} {
		for _, k := range keysOf(t, parts[part]) {
			if strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
				t.Errorf("show --json: %s key %q is not snake_case", part, k)
			}
		}
	}
	if !strings.Contains(out, `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`) {
		t.Errorf("show --json lacks the trace ID:\n%s", out)
	}
}
