package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

func mp(v any) string { b, _ := msgpack.Marshal(v); return string(b) }

// TestBadInputIsDeadLetteredByteForByte publishes hostile and broken
// messages; each must land in the dead-letter stream untouched, with its
// headers, and the consumer must go on to run a good task.
func TestBadInputIsDeadLetteredByteForByte(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	c := newCounter()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: c.wrap(executor.Echo())})
	good, _ := task.EncodeMsgpack(&task.Envelope{ID: "g", NodeType: "echo"})

	cases := []struct {
		name      string
		msg       natsMsg
		dlqType   string
		reason    string
		errSubstr string
	}{
		{"truncated msgpack", natsMsg{subject: "tasks.echo", data: string(good[:len(good)-3])}, "echo", dlq.ReasonInvalid, "malformed msgpack"},
		{"empty message", natsMsg{subject: "tasks.echo", data: ""}, "echo", dlq.ReasonInvalid, "empty message"},
		{"json without header", natsMsg{subject: "tasks.echo", data: `{"id":"a","node_type":"echo"}`}, "echo", dlq.ReasonInvalid, "Content-Type"},
		{"malformed json", natsMsg{subject: "tasks.echo", data: `{"id":"a",`, ct: "application/json"}, "echo", dlq.ReasonInvalid, "malformed json"},
		{"wrong types", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": []int{1}, "node_type": "echo"})}, "echo", dlq.ReasonInvalid, "field id"},
		{"huge declared length", natsMsg{subject: "tasks.echo", data: "\x81\xa2id\xdb\x7f\xff\xff\xff"}, "echo", dlq.ReasonInvalid, "declares 2147483647 bytes"},
		// 36 bytes that once made the msgpack decoder allocate 64 GiB and kill the consumer.
		{"array claiming 4 billion elements", natsMsg{subject: "tasks.echo", data: "\x83\xa2id\xa1a\xa9node_type\xa4echo\xa6params\x81\xa1a\xdd\xff\xff\xff\xf0"}, "echo", dlq.ReasonInvalid, "declares 4294967280 elements"},
		{"invalid utf-8 id", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": "a\xff", "node_type": "echo"})}, "echo", dlq.ReasonInvalid, "UTF-8"},
		{"missing node type", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": "a"})}, "echo", dlq.ReasonInvalid, "missing node type"},
		{"type/subject mismatch", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": "a", "node_type": "other"})}, "echo", dlq.ReasonInvalid, "does not match subject"},
		{"unreadable subject", natsMsg{subject: "tasks.a.b", data: mp(map[string]any{"id": "a", "node_type": "a"})}, queue.InvalidNodeType, dlq.ReasonInvalid, "does not match subject"},
		{"unknown node type", natsMsg{subject: "tasks.resize", data: mp(map[string]any{"id": "u1", "node_type": "resize"})}, "resize", dlq.ReasonUnknownNodeType, `unknown node type "resize"`},
		{"oversized payload", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": "big", "node_type": "echo", "payload": strings.Repeat("x", 5000)})}, "echo", dlq.ReasonInvalid, "exceeds the 4096-byte limit"},
		{"odd headers", natsMsg{subject: "tasks.echo", data: "\xc1", ct: "application/msgpack; x=\"\x7f\""}, "echo", dlq.ReasonInvalid, "malformed msgpack"},
		{"past deadline", natsMsg{subject: "tasks.echo", data: mp(map[string]any{"id": "late", "node_type": "echo", "deadline": 1000})}, "echo", dlq.ReasonDeadline, "deadline"},
	}
	for i := range cases {
		cases[i].msg.headers = map[string]string{"X-Trace": "trace-" + cases[i].name}
		e.publishRaw(&cases[i].msg)
	}
	e.start(reg, runnerOpts{workers: 2, maxPayload: 4096})
	eventually(t, 20*time.Second, "every bad message to be dead-lettered", func() bool {
		return int(e.streamMsgs(e.names.DLQStream)) >= len(cases)
	})

	// The consumer keeps serving: the next good task runs.
	if _, err := queue.NewPublisher(e.js, e.names).Publish(context.Background(), &task.Envelope{ID: "after", NodeType: "echo"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the good task after the bad ones", func() bool { return c.snapshot()["after"] == 1 })
	eventually(t, 10*time.Second, "the task stream to empty", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })

	recs := e.records()
	if len(recs) != len(cases) {
		t.Fatalf("%d records for %d bad messages", len(recs), len(cases))
	}
	byTrace := map[string]*dlqMsg{}
	for _, r := range recs {
		byTrace[r.rec.Headers["X-Trace"][0]] = r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := byTrace["trace-"+c.name]
			if r == nil {
				t.Fatal("no record")
			}
			if !bytes.Equal(r.rec.Data, []byte(c.msg.data)) {
				t.Fatalf("data changed: %q, want %q", r.rec.Data, c.msg.data)
			}
			if c.msg.ct != "" && r.rec.Headers["Content-Type"][0] != c.msg.ct {
				t.Fatalf("headers changed: %v", r.rec.Headers)
			}
			if r.subject != "dlq."+c.dlqType || r.rec.NodeType != c.dlqType {
				t.Fatalf("record on %s (node type %q), want dlq.%s", r.subject, r.rec.NodeType, c.dlqType)
			}
			if r.rec.Reason != c.reason || !strings.Contains(r.rec.Error, c.errSubstr) {
				t.Fatalf("reason %q error %q; want %q containing %q", r.rec.Reason, r.rec.Error, c.reason, c.errSubstr)
			}
			if r.rec.Subject != c.msg.subject || r.rec.Stream != e.names.TaskStream || r.rec.Sequence == 0 || r.rec.Worker == "" ||
				r.rec.Deliveries != 1 || r.rec.LastFailure.IsZero() || r.rec.NodeqVersion == "" {
				t.Fatalf("context missing: %+v", r.rec)
			}
			if r.header.Get(dlq.HeaderReason) != c.reason {
				t.Fatalf("headers %v", r.header)
			}
		})
	}
}

// TestFullDLQKeepsTask: when the dead-letter stream refuses a record, the
// task stays in the task stream, held with its outcome by the worker that
// ran it, and is dead-lettered once there is room, without running again.
func TestFullDLQKeepsTask(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{DLQMaxBytes: 64}) // too small for any record
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "fault", Executor: executor.Fault()})
	if _, err := queue.NewPublisher(e.js, e.names).Publish(context.Background(),
		&task.Envelope{ID: "f1", NodeType: "fault", Params: task.Params{"kind": "Manifest"}}); err != nil {
		t.Fatal(err)
	}
	promReg := prometheus.NewRegistry()
	e.start(reg, runnerOpts{workers: 1, retryDelay: 100 * time.Millisecond, metrics: metrics.New(promReg)})
	info := func() *jetstream.ConsumerInfo {
		ci, err := e.cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ci
	}
	eventually(t, 10*time.Second, "the task held", func() bool { return gaugeValue(t, promReg, "nodeq_dlq_held_tasks") == 1 })
	time.Sleep(time.Second) // several tries to store (100ms, 200ms, 400ms)
	if ci := info(); ci.Delivered.Consumer != 1 || ci.NumAckPending != 1 {
		t.Fatalf("delivered %d times, %d ack pending; want the one delivery held", ci.Delivered.Consumer, ci.NumAckPending)
	}
	if m := e.streamMsgs(e.names.TaskStream); m != 1 {
		t.Fatalf("task stream holds %d; the task must stay while the DLQ is full", m)
	}
	if d := e.streamMsgs(e.names.DLQStream); d != 0 {
		t.Fatalf("%d records in a full DLQ", d)
	}
	if n := counterValue(t, promReg, "fault", "dlq_publish_failed"); n != 1 {
		t.Fatalf("dlq_publish_failed counter %v, want 1 (once per task, not per try)", n)
	}

	// Make room: the next try stores the record and only then removes the task.
	cfg := queue.DLQStreamConfig(e.names, queue.StreamOptions{})
	if _, err := e.js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the record to be stored", func() bool {
		return e.streamMsgs(e.names.DLQStream) == 1 && e.streamMsgs(e.names.TaskStream) == 0
	})
	if n := counterValue(t, promReg, "fault", "dead_lettered"); n != 1 {
		t.Fatalf("dead_lettered counter %v", n)
	}
	if g := gaugeValue(t, promReg, "nodeq_dlq_held_tasks"); g != 0 {
		t.Fatalf("held gauge %v after the store", g)
	}
	recs := e.records()
	if recs[0].rec.TaskID != "f1" || recs[0].rec.ErrorKind != "Manifest" || recs[0].rec.Reason != dlq.ReasonPermanent {
		t.Fatalf("%+v", recs[0].rec)
	}
}
