package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

func TestClean(t *testing.T) {
	for _, c := range []struct{ in, line, text string }{
		{"plain text, ünïcode, 日本", "plain text, ünïcode, 日本", "plain text, ünïcode, 日本"},
		{"\x1b[2Jclear", `\x1b[2Jclear`, `\x1b[2Jclear`},
		{"a\r\nb\tc", `a\r\nb\tc`, "a\\r\nb\tc"},
		{"del\x7f bell\x07 nul\x00", `del\x7f bell\x07 nul\x00`, `del\x7f bell\x07 nul\x00`},
		{"csi\u009b nel\u0085", `csi\u009b nel\u0085`, `csi\u009b nel\u0085`},
		{"rlo\u202e lri\u2066 pdi\u2069 lre\u202a lrm\u200e ls\u2028", `rlo\u202e lri\u2066 pdi\u2069 lre\u202a lrm\u200e ls\u2028`, `rlo\u202e lri\u2066 pdi\u2069 lre\u202a lrm\u200e ls\u2028`},
		{"bad\xff\x9b utf8\xe2\x80", `bad\xff\x9b utf8\xe2\x80`, `bad\xff\x9b utf8\xe2\x80`},
		{`already \x1b escaped`, `already \x1b escaped`, `already \x1b escaped`},
	} {
		if got := clean(c.in); got != c.line {
			t.Errorf("clean(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := cleanText(c.in); got != c.text {
			t.Errorf("cleanText(%q) = %q, want %q", c.in, got, c.text)
		}
	}
	b, _ := json.Marshal(map[string]string{"k": "esc\x1b del\x7f csi\u009b rlo\u202e bad\xff <tag>"})
	got := cleanJSON(b)
	if want := `{"k":"esc\u001b del\u007f csi\u009b rlo\u202e bad\ufffd \u003ctag\u003e"}`; string(got) != want {
		t.Fatalf("cleanJSON = %s, want %s", got, want)
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil || back["k"] != "esc\x1b del\x7f csi\u009b rlo\u202e bad\ufffd <tag>" {
		t.Fatalf("cleanJSON changed the meaning: %q, %v", back, err)
	}
}

// rawControl returns a description of the first character in out that a
// terminal would act on, or "" if there is none. Newlines, and tabs when
// allowTab, are allowed.
func rawControl(out string, allowTab bool) string {
	for i, r := range out {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(out[i:], "\uFFFD"):
			return fmt.Sprintf("invalid UTF-8 after %q", out[max(0, i-20):i])
		case r == '\n', r == '\t' && allowTab:
		case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f, 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069:
			return fmt.Sprintf("%U after %q", r, out[max(0, i-20):i])
		}
	}
	return ""
}

const (
	hostileID    = "t-\x1b[2J\x9b\u009b\u202eevil\r\xff"
	hostileError = "boom\x1b[2J\r\u202eerror\x9b\xff\x7f\x1b]0;pwned\x07"
)

// storeHostileRecords stores, as a hostile producer could, two dead-letter
// records full of terminal controls: one whose original task is readable
// JSON, one whose original message is not a task.
func storeHostileRecords(t *testing.T) string {
	t.Helper()
	srv := natstest.Server(t)
	nc, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	if err := queue.EnsureStreams(t.Context(), js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data := []byte(`{"id":"ok-1","node_type":"echo","node_id":"n\u001b[31m\u202e","payload":{"text":"\u001b[2J\u009b\u202e\u007f\r"},"params":{"p":"\u2066x"}}`)
	for i, r := range []*dlq.Record{
		{Reason: "permanent_error\x1b[5m", TaskID: hostileID, NodeID: "node\x1b]0;title\x07", NodeType: "echo", CorrelationID: "c\u202e",
			ErrorKind: "Manifest\x1b[1m", Error: hostileError, Causes: []string{hostileError, "cause\x1b[A\u202e"},
			Stack: "goroutine 1 [running]:\nmain.f()\n\t/src/main.go:1 +0x1\x1b[2J\r\u202e\n", Attempts: 1, Deliveries: 1,
			FirstFailure: now, LastFailure: now, Worker: "host\u2066/1", Subject: "tasks.echo\x1b[K", Stream: "NODEQ_TASKS", Sequence: 1,
			NodeqVersion: "0.1\x9b", Headers: map[string][]string{"Content-Type": {"application/json"}, "X-Evil\x1b[2J": {"v\x1b[2J\u202e\r\xff"}}, Data: data},
		{Reason: "invalid", TaskID: "t2\x1b[2J", NodeType: "echo", ErrorKind: "Manifest\x1b[1m", Error: hostileError, Attempts: 1, Deliveries: 1,
			FirstFailure: now, LastFailure: now, Worker: "w", Subject: "tasks.echo", Stream: "NODEQ_TASKS", Sequence: 2,
			Headers: map[string][]string{"Content-Type": {"application/json"}}, Data: []byte("\x1b[2J\u202enot a task\xff")},
	} {
		b, err := dlq.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(names.DLQPrefix + ".echo")
		msg.Data = b
		msg.Header.Set("Content-Type", dlq.ContentType)
		if _, err := js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatalf("record %d: %v", i+1, err)
		}
	}
	_ = nc
	return srv.ClientURL()
}

// TestDLQOutputEscapesControls: list, show and stats print the controls a
// hostile producer put into a record escaped, never raw; their --json
// output is valid JSON without raw DEL, C1 or bidi characters.
func TestDLQOutputEscapesControls(t *testing.T) {
	url := storeHostileRecords(t)
	dlqRun := func(args ...string) string {
		t.Helper()
		code, out, errOut := runProducer(t, "", append(append([]string{"dlq"}, args...), "--nats-url", url)...)
		if code != exitOK {
			t.Fatalf("dlq %v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	for _, c := range []struct {
		args     []string
		allowTab bool
		want     []string
	}{
		{[]string{"list"}, false, []string{`t-\x1b[2J\x9b\u009b\u202eevil\r\xff`, `boom\x1b[2J \u202eerror\x9b\xff\x7f\x1b]0;pwned\x07`,
			`Manifest\x1b[1m`, `permanent_error\x1b[5m`, `t2\x1b[2J`, "2 matching records"}},
		{[]string{"show", "1"}, true, []string{
			`t-\x1b[2J\x9b\u009b\u202eevil\r\xff`, `node\x1b]0;title\x07`, `c\u202e`, `Manifest\x1b[1m`,
			`boom\x1b[2J\r\u202eerror\x9b\xff\x7f\x1b]0;pwned\x07`, `2. cause\x1b[A\u202e`, "\t/src/main.go:1 +0x1\\x1b[2J\\r\\u202e\n",
			`host\u2066/1`, `tasks.echo\x1b[K (stream NODEQ_TASKS, seq 1)`, `0.1\x9b`, `X-Evil\x1b[2J: v\x1b[2J\u202e\r\xff`,
			`"node_id": "n\u001b[31m\u202e"`, `"text": "\u001b[2J\u009b\u202e\u007f\r"`, `"p": "\u2066x"`}},
		{[]string{"show", "2"}, false, []string{`t2\x1b[2J`, "not a readable task", "|.[2J...not a tas|"}},
		// stats shows the fingerprint: numbers masked, bytes that are not UTF-8 replaced (U+FFFD)
		{[]string{"stats"}, false, []string{`echo`, `Manifest\x1b[1m`, `permanent_error\x1b[5m`, "boom\\x1b[<n>J \\u202eerror\ufffd\\x7f\\x1b]<n>;pwned\\x07"}},
	} {
		out := dlqRun(c.args...)
		if bad := rawControl(out, c.allowTab); bad != "" {
			t.Fatalf("dlq %v prints a raw control (%s):\n%q", c.args, bad, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Fatalf("dlq %v does not show %q:\n%s", c.args, w, out)
			}
		}
	}

	for _, args := range [][]string{{"list", "--json"}, {"show", "1", "--json"}, {"show", "2", "--json"}, {"stats", "--json"}} {
		out := dlqRun(args...)
		if bad := rawControl(out, false); bad != "" {
			t.Fatalf("dlq %v prints a raw control (%s):\n%q", args, bad, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !json.Valid([]byte(line)) {
				t.Fatalf("dlq %v: not JSON: %s", args, line)
			}
		}
	}
	var it listItem
	out := dlqRun("list", "--json", "--limit", "1", "--oldest")
	if err := json.Unmarshal([]byte(out), &it); err != nil || it.TaskID != viaJSON(hostileID) || it.Error != viaJSON(hostileError) {
		t.Fatalf("list --json does not keep the values: %+v %v\n%s", it, err, out)
	}
	var shown struct {
		Record  dlq.Record     `json:"record"`
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal([]byte(dlqRun("show", "1", "--json")), &shown); err != nil || shown.Payload["text"] != "\x1b[2J\u009b\u202e\x7f\r" ||
		shown.Record.Headers["X-Evil\x1b[2J"] == nil {
		t.Fatalf("show --json does not keep the values: %+v %v", shown, err)
	}
}

// viaJSON is s after a JSON round trip: each byte that is not UTF-8 becomes U+FFFD.
func viaJSON(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
