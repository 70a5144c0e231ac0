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

func TestDLQCommands(t *testing.T) {
	url := startConsumer(t)
	failSome(t, url)
	dlqRun := func(stdin string, args ...string) (int, string, string) {
		return runProducer(t, stdin, append(append([]string{"dlq"}, args...), "--nats-url", url)...)
	}

	code, out, _ := dlqRun("", "list")
	if code != 0 || !strings.Contains(out, "4 matching records, newest first") || strings.Index(out, "nil map") > strings.Index(out, "width must be positive") {
		t.Fatalf("list (newest first):\n%s", out)
	}
	code, out, _ = dlqRun("", "list", "--limit", "2", "--kind", "manifest")
	if code != 0 || !strings.Contains(out, "2 matching records") || strings.Contains(out, "503") {
		t.Fatalf("list --kind:\n%s", out)
	}
	code, out, _ = dlqRun("", "list", "--limit", "1")
	if code != 0 || !strings.Contains(out, "1 of 4 matching records, newest first; next page: --before-seq 4") {
		t.Fatalf("list paging:\n%s", out)
	}
	code, out, _ = dlqRun("", "list", "--json", "--task-id", "t-transport")
	var item listItem
	if code != 0 || json.Unmarshal([]byte(out), &item) != nil || item.ErrorKind != "Transport" || item.Seq != 3 {
		t.Fatalf("list --json:\n%s", out)
	}

	code, out, _ = dlqRun("", "show", "1")
	for _, want := range []string{"reason          permanent_error", "node id         n1", "error           width must be positive", `"w": 0`, "Nats-Msg-Id:", "tasks.fault (stream NODEQ_TASKS, seq 1)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("show does not contain %q:\n%s", want, out)
		}
	}
	code, out, _ = dlqRun("", "show", "4")
	if code != 0 || !strings.Contains(out, "stack trace:") || !strings.Contains(out, "(*fault).execute") {
		t.Fatalf("show of a panic:\n%s", out)
	}
	if code, _, errOut := dlqRun("", "show", "x"); code != exitUsage || !strings.Contains(errOut, "sequence number") {
		t.Fatalf("show x: %d %s", code, errOut)
	}

	code, out, _ = dlqRun("", "stats")
	if code != 0 || !strings.Contains(out, "4 records in 3 groups") || !regexpLine(out, "fault", "Manifest", "2", "width must be positive (2)") {
		t.Fatalf("stats:\n%s", out)
	}

	code, out, _ = dlqRun("", "replay", "--kind", "Manifest", "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run: would replay 2 records, skip 0") || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("dry run:\n%s", out)
	}
	code, out, _ = dlqRun("", "replay", "--kind", "Manifest", "--rate", "100/s")
	if code != 0 || !strings.Contains(out, "replayed 2, already replayed 0, skipped 0, ") || !strings.Contains(out, "failed 0 in") {
		t.Fatalf("replay:\n%s", out)
	}
	if code, _, errOut := dlqRun("", "replay", "--rate", "fast"); code != exitUsage || !strings.Contains(errOut, "--rate") {
		t.Fatalf("bad rate: %d %s", code, errOut)
	}
	if code, _, errOut := dlqRun("", "list", "--since", "yesterday"); code != exitUsage || !strings.Contains(errOut, "--since") {
		t.Fatalf("bad since: %d %s", code, errOut)
	}

	code, _, errOut := dlqRun("n\n", "purge", "--kind", "Other")
	if code != exitFailed || !strings.Contains(errOut, "Delete 1 matching records?") || !strings.Contains(errOut, "nothing was deleted") {
		t.Fatalf("purge answered no: %d %s", code, errOut)
	}
	code, out, _ = dlqRun("y\n", "purge", "--kind", "Other")
	if code != 0 || !strings.Contains(out, "purged 1 records") {
		t.Fatalf("purge answered yes: %d %s", code, out)
	}
	code, out, _ = dlqRun("", "list", "--kind", "Other")
	if code != 0 || !strings.Contains(out, "no matching records") {
		t.Fatalf("after purge:\n%s", out)
	}
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

// A record's payload is shown decoded only when decoding it is cheap: a
// payload of many tiny values (which would cost ~100x its size as Go
// values) is shown as it is.
func TestDecodePayloadBounded(t *testing.T) {
	emptyMaps := func(n int) []byte {
		b := []byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} // array 32
		for range n {
			b = append(b, 0x80)
		}
		return b
	}
	cases := []struct {
		name    string
		env     *task.Envelope
		decoded bool
	}{
		{"small msgpack", &task.Envelope{Payload: emptyMaps(3), PayloadEncoding: task.PayloadMsgpack}, true},
		{"hostile msgpack", &task.Envelope{Payload: emptyMaps(200000), PayloadEncoding: task.PayloadMsgpack}, false},
		{"small json", &task.Envelope{Payload: []byte(`[{},{}]`), PayloadEncoding: task.PayloadJSON}, true},
		{"hostile json", &task.Envelope{Payload: []byte("[" + strings.Repeat("{},", 200000) + "{}]"), PayloadEncoding: task.PayloadJSON}, false},
		{"hostile json in bytes", &task.Envelope{Payload: []byte("[" + strings.Repeat("{},", 200000) + "{}]"), PayloadEncoding: task.PayloadBytes}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := decodePayload(c.env)
			_, isSlice := v.([]any)
			if isSlice != c.decoded {
				t.Fatalf("decoded %v (%T); want %v", isSlice, v, c.decoded)
			}
		})
	}
}
