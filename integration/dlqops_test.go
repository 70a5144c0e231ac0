package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

func (e *env) store() *dlq.Store { return dlq.NewStore(e.js, e.names.DLQStream, e.names.DLQPrefix) }

// writeRecords stores n records whose original tasks are echo tasks
// "<prefix>-<i>", letting mod adjust each.
func (e *env) writeRecords(prefix string, n int, mod func(i int, r *dlq.Record)) {
	e.t.Helper()
	w := dlq.NewWriter(e.js, e.names.DLQPrefix)
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		msg, err := queue.NewPublisher(e.js, e.names).Message(&task.Envelope{ID: id, NodeType: "echo", Payload: []byte(id)})
		if err != nil {
			e.t.Fatal(err)
		}
		r := &dlq.Record{Reason: dlq.ReasonExhausted, TaskID: id, NodeType: "echo", ErrorKind: "Transport", Error: "POST http://thumbs: 503 Service Unavailable",
			Attempts: 3, Deliveries: 3, Worker: "test/1", Subject: msg.Subject, Stream: e.names.TaskStream, Sequence: uint64(i + 1),
			Headers: msg.Header, Data: msg.Data, FirstFailure: time.Now(), LastFailure: time.Now()}
		if mod != nil {
			mod(i, r)
		}
		if _, err := w.Write(context.Background(), r); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) selected(f *dlq.Filter) []string {
	e.t.Helper()
	var ids []string
	if err := e.store().Scan(context.Background(), f, 0, func(en dlq.Entry) error {
		ids = append(ids, en.Record.TaskID)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(ids)
	return ids
}

func TestFiltersSelectExactly(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	kinds := []string{"Transport", "Manifest", "Io"}
	types := []string{"resize", "notify"}
	e.writeRecords("old", 6, func(i int, r *dlq.Record) {
		r.NodeType, r.ErrorKind = types[i%2], kinds[i%3]
		r.Sequence = uint64(100 + i)
		if i == 4 {
			r.Error = "connection reset by peer"
		}
	})
	time.Sleep(50 * time.Millisecond)
	between := time.Now()
	time.Sleep(50 * time.Millisecond)
	e.writeRecords("new", 4, func(i int, r *dlq.Record) {
		r.NodeType, r.ErrorKind, r.Reason = types[i%2], kinds[i%3], dlq.ReasonPermanent
		r.Sequence = uint64(200 + i)
	})
	ids := func(s ...string) []string { sort.Strings(s); return s }
	cases := []struct {
		name string
		f    dlq.Filter
		want []string
	}{
		{"everything", dlq.Filter{}, ids("old-0", "old-1", "old-2", "old-3", "old-4", "old-5", "new-0", "new-1", "new-2", "new-3")},
		{"node type", dlq.Filter{NodeTypes: []string{"resize"}}, ids("old-0", "old-2", "old-4", "new-0", "new-2")},
		{"two node types", dlq.Filter{NodeTypes: []string{"resize", "notify"}}, ids("old-0", "old-1", "old-2", "old-3", "old-4", "old-5", "new-0", "new-1", "new-2", "new-3")},
		{"kind, any case", dlq.Filter{Kinds: []string{"transport"}}, ids("old-0", "old-3", "new-0", "new-3")},
		{"reason", dlq.Filter{Reasons: []string{dlq.ReasonPermanent}}, ids("new-0", "new-1", "new-2", "new-3")},
		{"since", dlq.Filter{Since: between}, ids("new-0", "new-1", "new-2", "new-3")},
		{"until", dlq.Filter{Until: between}, ids("old-0", "old-1", "old-2", "old-3", "old-4", "old-5")},
		{"task id", dlq.Filter{TaskID: "old-3"}, ids("old-3")},
		{"match", dlq.Filter{Match: "RESET BY"}, ids("old-4")},
		{"node type + kind", dlq.Filter{NodeTypes: []string{"notify"}, Kinds: []string{"Manifest"}}, ids("old-1", "new-1")},
		{"node type + since + kind", dlq.Filter{NodeTypes: []string{"resize"}, Since: between, Kinds: []string{"Io"}}, ids("new-2")},
		{"kind + until + match", dlq.Filter{Kinds: []string{"Io"}, Until: between, Match: "503"}, ids("old-2", "old-5")},
		{"no match", dlq.Filter{NodeTypes: []string{"resize"}, TaskID: "old-1"}, nil},
		{"after seq", dlq.Filter{AfterSeq: 8}, ids("new-2", "new-3")},
		{"before seq", dlq.Filter{BeforeSeq: 3}, ids("old-0", "old-1")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := e.selected(&c.f); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("selected %v, want %v", got, c.want)
			}
		})
	}
}

// echoCounter runs a consumer with a counting echo node.
func (e *env) echoCounter() *counter {
	c := newCounter()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: c.wrap(executor.Echo())})
	e.start(reg, runnerOpts{workers: 16})
	return c
}

func TestReplayTenThousand(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	const n = 10000
	e.writeRecords("r", n, nil)
	c := e.echoCounter()
	start := time.Now()
	sum, err := e.store().Replay(context.Background(), &dlq.Filter{}, dlq.ReplayOptions{})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replayed %d records in %v: %.0f records/s", sum.Replayed, took.Round(time.Millisecond), float64(sum.Replayed)/took.Seconds())
	if sum.Replayed != n || sum.Failed != 0 || sum.Skipped != 0 {
		t.Fatalf("%+v", sum)
	}
	eventually(t, 60*time.Second, "every replayed task to run", func() bool { return c.total() >= n && e.streamMsgs(e.names.TaskStream) == 0 })
	runs := c.snapshot()
	for i := range n {
		if k := runs[fmt.Sprintf("r-%d", i)]; k != 1 {
			t.Fatalf("task r-%d ran %d times", i, k)
		}
	}
	if d := e.streamMsgs(e.names.DLQStream); d != 0 {
		t.Fatalf("%d records left", d)
	}
}

func TestInterruptedReplayLosesAndDuplicatesNothing(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	const n = 2000
	e.writeRecords("i", n, nil)
	c := e.echoCounter()

	// A replay that died after its publish was acknowledged but before it
	// deleted the record: the record of task i-0 has already been republished.
	first, err := e.store().Get(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(first.Record.Subject)
	m.Data, m.Header = first.Record.Data, nats.Header{}
	m.Header.Set(nats.MsgIdHdr, dlq.ReplayMsgID(e.names.DLQStream, 1))
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}

	// A replay cancelled halfway.
	ctx, cancel := context.WithCancel(context.Background())
	sum1, err := e.store().Replay(ctx, &dlq.Filter{}, dlq.ReplayOptions{Progress: func(s dlq.ReplaySummary) {
		if s.Selected == n/2 {
			cancel()
		}
	}})
	if err == nil || sum1.Replayed+sum1.Duplicates >= n {
		t.Fatalf("the first replay was not interrupted: %+v, %v", sum1, err)
	}
	left := e.streamMsgs(e.names.DLQStream)
	// Run it again: it picks up the rest.
	sum2, err := e.store().Replay(context.Background(), &dlq.Filter{}, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first run %+v, %d records left, second run %+v", sum1, left, sum2)
	if sum1.Duplicates != 1 {
		t.Fatalf("the already republished record was not recognised: %+v", sum1)
	}
	// A delete cut off by the cancellation may have reached the server
	// without its reply: the counts may fall a little short, the tasks may not.
	if got := sum1.Replayed + sum1.Duplicates + sum2.Replayed + sum2.Duplicates; got > n || got < n-64 {
		t.Fatalf("replayed %d in all, want about %d", got, n)
	}
	eventually(t, 60*time.Second, "every task to run", func() bool { return c.total() >= n && e.streamMsgs(e.names.TaskStream) == 0 })
	time.Sleep(300 * time.Millisecond) // a duplicate would show up now
	lost, dup := 0, 0
	runs := c.snapshot()
	for i := range n {
		switch k := runs[fmt.Sprintf("i-%d", i)]; {
		case k == 0:
			lost++
		case k > 1:
			dup++
		}
	}
	t.Logf("replayed %d, lost %d, duplicated %d", n, lost, dup)
	if lost != 0 || dup != 0 || e.streamMsgs(e.names.DLQStream) != 0 {
		t.Fatalf("lost %d, duplicated %d, %d records left", lost, dup, e.streamMsgs(e.names.DLQStream))
	}
}

func TestDryRunAndPurgeWithFilter(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	e.writeRecords("d", 10, func(i int, r *dlq.Record) {
		if i%2 == 0 {
			r.NodeType, r.Subject = "resize", "tasks.resize"
		}
	})
	sum, err := e.store().Replay(context.Background(), &dlq.Filter{}, dlq.ReplayOptions{DryRun: true})
	if err != nil || sum.Replayed != 10 {
		t.Fatalf("dry run: %+v %v", sum, err)
	}
	if d, m := e.streamMsgs(e.names.DLQStream), e.streamMsgs(e.names.TaskStream); d != 10 || m != 0 {
		t.Fatalf("dry run changed something: %d records, %d tasks", d, m)
	}
	n, err := e.store().Purge(context.Background(), &dlq.Filter{NodeTypes: []string{"resize"}})
	if err != nil || n != 5 {
		t.Fatalf("purged %d: %v", n, err)
	}
	if got := e.selected(&dlq.Filter{}); fmt.Sprint(got) != "[d-1 d-3 d-5 d-7 d-9]" {
		t.Fatalf("left %v", got)
	}
	n, err = e.store().Purge(context.Background(), &dlq.Filter{})
	if err != nil || n != 5 || e.streamMsgs(e.names.DLQStream) != 0 {
		t.Fatalf("purge all: %d %v", n, err)
	}
}

// TestMaxReplaysStopsAPoisonTask: a task that fails again after a replay
// carries its replay count, and the cap keeps it in the DLQ.
func TestMaxReplaysStopsAPoisonTask(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	j := &journal{}
	e.start(faultRegistry(j, nil), runnerOpts{})
	e.publish(&task.Envelope{ID: "poison", NodeType: "fault", Params: task.Params{"kind": "Marshaling"}})
	eventually(t, 10*time.Second, "the first record", func() bool { return e.streamMsgs(e.names.DLQStream) == 1 })

	opts := dlq.ReplayOptions{MaxReplays: 1}
	if sum, err := e.store().Replay(context.Background(), &dlq.Filter{}, opts); err != nil || sum.Replayed != 1 {
		t.Fatalf("first replay %+v %v", sum, err)
	}
	eventually(t, 10*time.Second, "the task to fail again", func() bool {
		return len(j.of("poison")) == 2 && e.streamMsgs(e.names.DLQStream) == 1 && e.streamMsgs(e.names.TaskStream) == 0
	})
	recs := e.records()
	if rc := recs[0].rec.ReplayCount(); rc != 1 || !strings.HasPrefix(recs[0].rec.Headers[dlq.HeaderReplayedFrom][0], e.names.DLQStream+":") {
		t.Fatalf("replay count %d, headers %v", rc, recs[0].rec.Headers)
	}
	sum, err := e.store().Replay(context.Background(), &dlq.Filter{}, opts)
	if err != nil || sum.Skipped != 1 || sum.Replayed != 0 {
		t.Fatalf("second replay must skip: %+v %v", sum, err)
	}
	if len(j.of("poison")) != 2 || e.streamMsgs(e.names.DLQStream) != 1 {
		t.Fatal("the capped task was replayed")
	}
	opts.Force = true
	if sum, err := e.store().Replay(context.Background(), &dlq.Filter{}, opts); err != nil || sum.Replayed != 1 {
		t.Fatalf("forced replay %+v %v", sum, err)
	}
	eventually(t, 10*time.Second, "the forced replay to run", func() bool { return len(j.of("poison")) == 3 })
}
