package dlq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// testStore starts a real embedded nats-server with nodeq's streams and
// returns a Store on its dead-letter stream.
func testStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	n := queue.DefaultNames()
	if err := queue.EnsureStreams(t.Context(), js, n, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return NewStore(js, n.DLQStream, n.DLQPrefix), js
}

// writeRecord stores a record as a consumer would: on dlq.<node type>.
func writeRecord(t *testing.T, js jetstream.JetStream, seq int, nodeType string, replays int) {
	t.Helper()
	r := &Record{Reason: ReasonExhausted, TaskID: "t-" + strconv.Itoa(seq), NodeType: nodeType, ErrorKind: "Transport",
		Error: "boom", Stack: "goroutine 1", Causes: []string{"boom"}, Subject: "tasks." + nodeType, Stream: "NODEQ_TASKS",
		Sequence: uint64(seq), Data: []byte(`{"id":"t-` + strconv.Itoa(seq) + `","node_type":"` + nodeType + `"}`),
		Headers: map[string][]string{"Content-Type": {"application/json"}}}
	if replays > 0 {
		r.Headers[HeaderReplays] = []string{strconv.Itoa(replays)}
	}
	if _, err := NewWriter(js, "dlq").Write(t.Context(), r); err != nil {
		t.Fatal(err)
	}
}

// publishRaw stores a message on a dead-letter subject as anyone allowed
// to publish there could: a forged record, or not a record at all.
func publishRaw(t *testing.T, js jetstream.JetStream, subject string, r *Record) {
	t.Helper()
	data := []byte("not a record")
	if r != nil {
		var err error
		if data, err = Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(t.Context(), subject, data); err != nil {
		t.Fatal(err)
	}
}

func seqs(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// TestList pages through more records than one page, both ways and with a
// filter, following each page's cursor: every selected record comes
// exactly once, in order, and the last page says there is no next one.
func TestList(t *testing.T) {
	st, js := testStore(t)
	if p, err := st.List(t.Context(), &Filter{}, PageOptions{}); err != nil || len(p.Entries) != 0 || p.Next != 0 || p.Matched != 0 {
		t.Fatalf("empty stream: %+v, %v", p, err)
	}
	const n = 130
	var all, resize []uint64
	for i := 1; i <= n; i++ {
		nodeType := "echo"
		if i%3 == 0 {
			nodeType = "resize"
			resize = append(resize, uint64(i))
		}
		writeRecord(t, js, i, nodeType, i%2)
		all = append(all, uint64(i))
	}
	newest := slices.Clone(all)
	slices.Reverse(newest)
	newestResize := slices.Clone(resize)
	slices.Reverse(newestResize)

	cases := []struct {
		name    string
		filter  Filter
		opts    PageOptions
		want    []uint64 // every record, in page order
		pages   []int    // page sizes
		matched []int    // Page.Matched of each page
	}{
		{"newest first", Filter{}, PageOptions{}, newest, []int{50, 50, 30}, []int{130, 80, 30}},
		{"oldest first", Filter{}, PageOptions{Oldest: true, Limit: 60}, all, []int{60, 60, 10}, []int{60, 60, 10}},
		{"newest first, filtered", Filter{NodeTypes: []string{"resize"}}, PageOptions{Limit: 20}, newestResize, []int{20, 20, 3}, []int{43, 23, 3}},
		{"oldest first, filtered", Filter{Kinds: []string{"transport"}, TaskID: "t-7"}, PageOptions{Oldest: true, Limit: 1}, []uint64{7}, []int{1}, []int{1}},
		{"one page exactly", Filter{}, PageOptions{Oldest: true, Limit: n}, all, []int{n}, []int{n}},
		{"from a cursor", Filter{BeforeSeq: 11}, PageOptions{Limit: 4}, newest[n-10:], []int{4, 4, 2}, []int{10, 6, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.filter
			var got []uint64
			var sizes, matched []int
			for range 100 {
				p, err := st.List(t.Context(), &f, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, seqs(p.Entries)...)
				sizes, matched = append(sizes, len(p.Entries)), append(matched, p.Matched)
				for _, e := range p.Entries {
					if e.Record == nil || e.Record.Data != nil || e.Record.Stack != "" || e.Record.Causes != nil || e.Header != nil {
						t.Fatalf("record %d is not brief: %+v", e.Seq, e.Record)
					}
					if want := int(e.Seq % 2); e.Record.ReplayCount() != want || e.Record.TaskID != "t-"+strconv.Itoa(int(e.Seq)) {
						t.Fatalf("record %d: replays %d, task %q", e.Seq, e.Record.ReplayCount(), e.Record.TaskID)
					}
				}
				if p.Next == 0 {
					break
				}
				if c.opts.Oldest {
					f.AfterSeq = p.Next
				} else {
					f.BeforeSeq = p.Next
				}
			}
			if !slices.Equal(got, c.want) || !slices.Equal(sizes, c.pages) || !slices.Equal(matched, c.matched) {
				t.Fatalf("records %v\npages %v, matched %v\nwant %v\npages %v, matched %v", got, sizes, matched, c.want, c.pages, c.matched)
			}
		})
	}

	for _, o := range []PageOptions{{Limit: -1}, {Limit: MaxPageSize + 1}} {
		if _, err := st.List(t.Context(), &Filter{}, o); err == nil {
			t.Errorf("List with %+v: no error", o)
		}
	}
}

// outcome is what OnRecord reported for one record.
type outcome struct {
	seq uint64
	out Outcome
	why string
}

// TestDryRunIsTheReplay: a dry run reports, record by record, exactly
// what the replay with the same options then does, by the same rules
// (replay cap, unreadable, forged records), and changes nothing.
func TestDryRunIsTheReplay(t *testing.T) {
	st, js := testStore(t)
	ctx := t.Context()
	for i := 1; i <= 6; i++ {
		writeRecord(t, js, i, "echo", 0) // 1-6 replayable
	}
	writeRecord(t, js, 7, "echo", 3)                                                                                         // 7: replayed 3 times: skipped
	publishRaw(t, js, "dlq.echo", nil)                                                                                       // 8: unreadable: skipped
	publishRaw(t, js, "dlq.echo", &Record{NodeType: "echo", Subject: "$JS.API.STREAM.PURGE.NODEQ_TASKS", Data: []byte("x")}) // 9: refused
	publishRaw(t, js, "dlq.echo", &Record{NodeType: "other", Subject: "tasks.other", Data: []byte("x")})                     // 10: refused
	writeRecord(t, js, 11, "echo", 1)                                                                                        // 11: replayable

	run := func(o ReplayOptions) (ReplaySummary, []outcome) {
		t.Helper()
		var got []outcome
		o.OnRecord = func(e Entry, out Outcome, why error) {
			w := ""
			if why != nil {
				w = why.Error()
			}
			got = append(got, outcome{e.Seq, out, w})
		}
		sum, err := st.Replay(ctx, &Filter{}, o)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(a, b outcome) int { return int(a.seq) - int(b.seq) })
		return sum, got
	}
	records := func() uint64 {
		_, n, err := st.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	for _, c := range []struct {
		name     string
		opts     ReplayOptions
		replayed int
		left     uint64
	}{
		{"a limited replay", ReplayOptions{MaxReplays: 3, Limit: 2, Rate: 1000}, 2, 9},
		{"the rest", ReplayOptions{MaxReplays: 3}, 5, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := records()
			c.opts.DryRun = true
			drySum, dry := run(c.opts)
			if n := records(); n != before {
				t.Fatalf("the dry run changed the stream: %d records, was %d", n, before)
			}
			c.opts.DryRun = false
			sum, real := run(c.opts)
			if !slices.Equal(dry, real) {
				t.Fatalf("dry run reported\n%v\nthe replay did\n%v", dry, real)
			}
			if fmt.Sprint(drySum) != fmt.Sprint(sum) || sum.Replayed != c.replayed {
				t.Fatalf("dry run %+v, replay %+v; want %d replayed", drySum, sum, c.replayed)
			}
			if n := records(); n != c.left {
				t.Fatalf("%d records left, want %d", n, c.left)
			}
		})
	}
	// What is left is what the rules keep: 7 (cap), 8 (unreadable), 9, 10 (refused).
	_, got := run(ReplayOptions{MaxReplays: 3, DryRun: true})
	want := []Outcome{OutcomeSkipped, OutcomeSkipped, OutcomeRefused, OutcomeRefused}
	if len(got) != len(want) {
		t.Fatalf("left %v", got)
	}
	for i, o := range got {
		if o.seq != uint64(7+i) || o.out != want[i] || o.why == "" {
			t.Errorf("record %d: %v (%s), want %v", o.seq, o.out, o.why, want[i])
		}
	}
}

func TestReplayOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		opts ReplayOptions
		ok   bool
	}{
		{"zero value", ReplayOptions{}, true},
		{"all set", ReplayOptions{TaskPrefix: "prod.tasks", To: "prod.tasks.resize", Limit: 5, Rate: 0.5, MaxReplays: 2, Concurrency: 4}, true},
		{"to a node type", ReplayOptions{To: "resize"}, true},
		{"to a server subject", ReplayOptions{To: "$JS.API.STREAM.PURGE.NODEQ_TASKS"}, false},
		{"to a wildcard", ReplayOptions{To: "tasks.>"}, false},
		{"to another prefix", ReplayOptions{TaskPrefix: "prod", To: "tasks.resize"}, false},
		{"negative limit", ReplayOptions{Limit: -1}, false},
		{"negative rate", ReplayOptions{Rate: -1}, false},
		{"NaN rate", ReplayOptions{Rate: math.NaN()}, false},
		{"infinite rate", ReplayOptions{Rate: math.Inf(1)}, false},
		{"negative max replays", ReplayOptions{MaxReplays: -1}, false},
		{"negative concurrency", ReplayOptions{Concurrency: -1}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.opts.Validate(); (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, c.ok)
			}
		})
	}
}

// A replay with invalid options is refused before it reads anything.
func TestReplayRefusesInvalidOptions(t *testing.T) {
	st := NewStore(nil, "NODEQ_DLQ", "dlq") // no connection: Validate must come first
	if _, err := st.Replay(context.Background(), &Filter{}, ReplayOptions{Limit: -1}); err == nil {
		t.Fatal("no error")
	}
}

// A record written by hand with a huge error message and headers costs a
// page no more than one a consumer writes.
func TestListBoundsForgedRecords(t *testing.T) {
	st, js := testStore(t)
	huge := strings.Repeat("x", 100<<10)
	publishRaw(t, js, "dlq.echo", &Record{NodeType: "echo", TaskID: huge, Error: huge, Causes: []string{huge}, Stack: huge,
		Headers: map[string][]string{"X-Big": {huge}, HeaderReplays: {"2", "7"}}, Data: []byte(huge)})
	p, err := st.List(t.Context(), &Filter{}, PageOptions{})
	if err != nil || len(p.Entries) != 1 {
		t.Fatalf("%+v, %v", p, err)
	}
	r := p.Entries[0].Record
	if len(r.Error) > MaxErrorLen || len(r.TaskID) > maxShortField || r.Data != nil || r.Stack != "" || r.Causes != nil ||
		len(r.Headers) != 1 || r.ReplayCount() != 2 {
		t.Fatalf("error %d bytes, task ID %d, data %d, stack %d, causes %d, headers %d, replays %d",
			len(r.Error), len(r.TaskID), len(r.Data), len(r.Stack), len(r.Causes), len(r.Headers), r.ReplayCount())
	}
}

// An unreadable record is on its page whichever page that is: the paging
// cursors are no record-level condition. It used to show only on a first
// page, and following the cursors skipped it.
func TestListPagesKeepUnreadableRecords(t *testing.T) {
	st, js := testStore(t)
	writeRecord(t, js, 1, "resize", 0)
	publishRaw(t, js, "dlq.resize", nil) // seq 2
	writeRecord(t, js, 3, "resize", 0)
	for _, oldest := range []bool{false, true} {
		var got []uint64
		f := &Filter{}
		for {
			p, err := st.List(t.Context(), f, PageOptions{Limit: 1, Oldest: oldest})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, seqs(p.Entries)...)
			if p.Next == 0 {
				break
			}
			if oldest {
				f.AfterSeq = p.Next
			} else {
				f.BeforeSeq = p.Next
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []uint64{1, 2, 3}) {
			t.Errorf("oldest=%v: pages of one record gave %v, want [1 2 3]", oldest, got)
		}
	}
}

// A replay slower than the scan's idle timeout (--rate 5/m) replays every
// selected record: the scan used to take the wait in fn for idleness, stop,
// and report success with records left behind.
func TestSlowReplayReplaysEverything(t *testing.T) {
	defer func(d time.Duration) { scanIdle = d }(scanIdle)
	scanIdle = 100 * time.Millisecond
	st, js := testStore(t)
	for i := 1; i <= 4; i++ {
		writeRecord(t, js, i, "resize", 0)
	}
	sum, err := st.Replay(t.Context(), &Filter{}, ReplayOptions{Rate: 3, Concurrency: 1})
	if err != nil || sum.Replayed != 4 {
		t.Fatalf("replay = %+v, %v; want 4 replayed", sum, err)
	}
	if _, left, _ := st.Snapshot(t.Context()); left != 0 {
		t.Fatalf("%d records left after the replay", left)
	}
}

// TestStatsGroupsByFingerprint: records of one failure with different
// numbers and IDs form one group; another reason, kind or message another
// group; the group's ID selects exactly its records, undecodable ones too.
func TestStatsGroupsByFingerprint(t *testing.T) {
	st, js := testStore(t)
	w := NewWriter(js, "dlq")
	seq := uint64(0)
	write := func(nodeType, reason, kind, msg string) {
		t.Helper()
		seq++ // the writer's message ID is the task's place: one each
		r := &Record{Reason: reason, NodeType: nodeType, ErrorKind: kind, Error: msg, Subject: "tasks." + nodeType, Stream: "NODEQ_TASKS", Sequence: seq, Data: []byte("{}")}
		if _, err := w.Write(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		write("resize", ReasonExhausted, "Transport", fmt.Sprintf("dial tcp 10.0.0.%d:5432: timeout after %ds", i, 30+i))
	}
	write("resize", ReasonPermanent, "Transport", "dial tcp 10.0.0.9:5432: timeout after 3s")
	write("resize", ReasonExhausted, "Transport", "permission denied")
	write("ocr", ReasonExhausted, "Transport", "dial tcp 10.0.0.1:5432: timeout after 1s")
	publishRaw(t, js, "dlq.resize", nil)
	groups, total, err := st.Stats(t.Context(), &Filter{})
	if err != nil || total != 9 {
		t.Fatalf("total %d, %v", total, err)
	}
	if len(groups) != 5 {
		t.Fatalf("%d groups, want 5: %+v", len(groups), groups)
	}
	top := groups[0]
	if top.Count != 5 || top.Fingerprint != "dial tcp <addr>: timeout after <n>s" || top.Reason != ReasonExhausted || top.Distinct != 5 ||
		top.FirstSeq != 1 || top.LastSeq != 5 || !strings.HasPrefix(top.Sample, "dial tcp 10.0.0.4:5432") {
		t.Errorf("top group %+v", top)
	}
	for _, g := range groups {
		n, err := st.Count(t.Context(), &Filter{Group: g.ID})
		if err != nil || n != g.Count {
			t.Errorf("group %s (%+v): filter selects %d, %v", g.ID, g.GroupKey, n, err)
		}
	}
	// Filters narrow the groups.
	if groups, total, err := st.Stats(t.Context(), &Filter{NodeTypes: []string{"ocr"}}); err != nil || total != 1 || len(groups) != 1 {
		t.Errorf("ocr: %d records in %d groups, %v", total, len(groups), err)
	}
}

// TestScanSeqs selects records by sequence: given out of order, repeated,
// missing or past the end, each present one comes once, oldest first, and
// the other filters still apply.
func TestScanSeqs(t *testing.T) {
	st, js := testStore(t)
	for i := 1; i <= 6; i++ {
		writeRecord(t, js, i, map[bool]string{true: "resize", false: "ocr"}[i%2 == 0], 0)
	}
	publishRaw(t, js, "dlq.ocr", nil) // seq 7: not a record
	if err := st.Delete(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	collect := func(f *Filter) []uint64 {
		t.Helper()
		var got []uint64
		if err := st.Scan(t.Context(), f, 0, func(e Entry) error { got = append(got, e.Seq); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"some", Filter{Seqs: []uint64{5, 2, 2, 3, 99}}, []uint64{2, 5}},
		{"with a node type", Filter{Seqs: []uint64{1, 2, 4}, NodeTypes: []string{"resize"}}, []uint64{2, 4}},
		{"with a record filter", Filter{Seqs: []uint64{1, 2}, TaskID: "t-1"}, []uint64{1}},
		{"not a record", Filter{Seqs: []uint64{7}}, []uint64{7}},
		{"not a record, with a record filter", Filter{Seqs: []uint64{7}, Kinds: []string{"Transport"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := collect(&tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Purge and replay act on exactly those records.
	n, err := st.Purge(t.Context(), &Filter{Seqs: []uint64{1, 5, 3}})
	if err != nil || n != 2 {
		t.Fatalf("purged %d, %v", n, err)
	}
	sum, err := st.Replay(t.Context(), &Filter{Seqs: []uint64{2, 1}}, ReplayOptions{})
	if err != nil || sum.Selected != 1 || sum.Replayed != 1 {
		t.Fatalf("replay %+v, %v", sum, err)
	}
	if got := collect(&Filter{}); !slices.Equal(got, []uint64{4, 6, 7}) {
		t.Errorf("left %v", got)
	}
	if _, err := st.Get(t.Context(), 2); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a replayed record: %v, want ErrNotFound", err)
	}
}

// TestReplayToAnotherNodeTypeIsRefused: --to cannot send a task to a node
// type its envelope does not name (a consumer would dead-letter it again
// at once); it does move a record of another task prefix to its own.
func TestReplayToAnotherNodeTypeIsRefused(t *testing.T) {
	st, js := testStore(t)
	writeRecord(t, js, 1, "resize", 0)
	foreign := &Record{Version: 1, Reason: ReasonExhausted, NodeType: "resize", ErrorKind: "Transport", Subject: "legacy.resize", Data: []byte("{}")}
	publishRaw(t, js, "dlq.resize", foreign)
	sum, err := st.Replay(t.Context(), &Filter{}, ReplayOptions{To: "echo"})
	if err != nil || sum.Refused != 2 || sum.Replayed != 0 || !strings.Contains(sum.Errors[0], "dead-letter it again") {
		t.Fatalf("to echo: %+v, %v", sum, err)
	}
	sum, err = st.Replay(t.Context(), &Filter{Seqs: []uint64{2}}, ReplayOptions{To: "tasks.resize"})
	if err != nil || sum.Replayed != 1 {
		t.Fatalf("foreign prefix to its own node type: %+v, %v", sum, err)
	}
}

// TestScansLeaveNoConsumer: every read of the stream deletes the consumer
// it read with.
func TestScansLeaveNoConsumer(t *testing.T) {
	st, js := testStore(t)
	for i := 1; i <= 3; i++ {
		writeRecord(t, js, i, "resize", 0)
	}
	if _, _, err := st.Stats(t.Context(), &Filter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.List(t.Context(), &Filter{}, PageOptions{Limit: 1, Oldest: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Replay(t.Context(), &Filter{}, ReplayOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), "NODEQ_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	names := s.ConsumerNames(t.Context())
	var left []string
	for n := range names.Name() {
		left = append(left, n)
	}
	if len(left) > 0 {
		t.Errorf("consumers left on the dead-letter stream: %v", left)
	}
}

// TestPurgeBefore: a purge bounded by BeforeSeq deletes only the records
// stored before it, at once, and counts them; a later record stays.
func TestPurgeBefore(t *testing.T) {
	st, js := testStore(t)
	for i := 1; i <= 5; i++ {
		writeRecord(t, js, i, "resize", 0)
	}
	n, err := st.Purge(t.Context(), &Filter{BeforeSeq: 4})
	if err != nil || n != 3 {
		t.Fatalf("purged %d, %v; want 3", n, err)
	}
	var left []uint64
	if err := st.Scan(t.Context(), &Filter{}, 0, func(e Entry) error { left = append(left, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []uint64{4, 5}) {
		t.Fatalf("left %v", left)
	}
	if n, err := st.Purge(t.Context(), &Filter{}); err != nil || n != 2 {
		t.Fatalf("purge all: %d, %v", n, err)
	}
}

// TestReplaySkipsRecordsGoneMeanwhile removes a record after the replay's
// scan has read it and before it is republished, as a concurrent replay or
// a purge does while a rate-limited replay works through what it read
// ahead: its task must not be republished (past the duplicate window
// JetStream would take it as new and the task would run twice).
func TestReplaySkipsRecordsGoneMeanwhile(t *testing.T) {
	st, js := testStore(t)
	writeRecord(t, js, 1, "resize", 0)
	writeRecord(t, js, 2, "resize", 0)
	first, _, err := st.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first-- // the first record's sequence
	o := ReplayOptions{Concurrency: 1, Progress: func(s ReplaySummary) {
		if s.Selected == 1 && s.Replayed+s.Duplicates+s.Failed == 0 {
			if err := st.Delete(context.Background(), first); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Error(err)
			}
		}
	}}
	sum, err := st.Replay(t.Context(), &Filter{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Replayed != 1 || sum.Duplicates != 1 || sum.Failed != 0 {
		t.Errorf("summary %+v: want the record still there replayed, the one gone counted a duplicate", sum)
	}
	tasks, err := js.Stream(t.Context(), "NODEQ_TASKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := tasks.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("%d tasks republished, want 1: a record removed meanwhile was republished", info.State.Msgs)
	}
}
