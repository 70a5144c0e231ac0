package main

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// serverWithStreams starts a nats-server with nodeq's streams and no
// consumer: replayed tasks stay in the task stream to be looked at.
func serverWithStreams(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	if err := queue.EnsureStreams(t.Context(), js, queue.DefaultNames(), queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), js
}

// storeRecord stores the record of a failed echo task as a consumer would.
func storeRecord(t *testing.T, js jetstream.JetStream, id string, origSeq uint64, replays int) {
	t.Helper()
	r := &dlq.Record{Reason: dlq.ReasonExhausted, TaskID: id, NodeType: "echo", ErrorKind: "Transport", Error: "downstream down",
		Subject: "tasks.echo", Stream: "NODEQ_TASKS", Sequence: origSeq, Data: []byte(`{"id":"` + id + `","node_type":"echo"}`),
		Headers: map[string][]string{"Content-Type": {"application/json"}}}
	if replays > 0 {
		r.Headers[dlq.HeaderReplays] = []string{strconv.Itoa(replays)}
	}
	if _, err := dlq.NewWriter(js, "dlq").Write(t.Context(), r); err != nil {
		t.Fatal(err)
	}
}

// tableSeqs returns the SEQ column of a records table.
func tableSeqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	inTable := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "SEQ "):
			inTable = true
		case line == "":
			inTable = false
		case inTable:
			seq, err := strconv.ParseUint(strings.Fields(line)[0], 10, 64)
			if err != nil {
				t.Fatalf("row %q: %v", line, err)
			}
			seqs = append(seqs, seq)
		}
	}
	return seqs
}

var nextPage = regexp.MustCompile(`next page: ((?:--oldest )?--(?:before|after)-seq \d+)`)

// TestListPaging follows the next-page hints of dlq list through more
// records than one page, both ways: each record comes once, in order.
func TestListPaging(t *testing.T) {
	url, js := serverWithStreams(t)
	const n = 120
	var oldest []uint64
	for i := 1; i <= n; i++ {
		storeRecord(t, js, "p-"+strconv.Itoa(i), uint64(i), 0)
		oldest = append(oldest, uint64(i))
	}
	newest := slices.Clone(oldest)
	slices.Reverse(newest)
	for _, c := range []struct {
		name    string
		args    []string
		want    []uint64
		summary []string // the last line of each page
	}{
		{"newest first", []string{"--limit", "50"}, newest, []string{
			"50 of 120 matching records, newest first; next page: --before-seq 71",
			"50 of 70 matching records, newest first; next page: --before-seq 21",
			"20 matching records, newest first"}},
		{"oldest first", []string{"--oldest", "-n", "60"}, oldest, []string{
			"60 records, oldest first; next page: --oldest --after-seq 60",
			"60 records, oldest first",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"dlq", "list", "--nats-url", url}, c.args...)
			var got []uint64
			var summaries []string
			for page := 0; ; page++ {
				code, out, errOut := runProducer(t, "", args...)
				if code != exitOK || page > 10 {
					t.Fatalf("page %d: exit %d: %s\n%s", page, code, errOut, out)
				}
				got = append(got, tableSeqs(t, out)...)
				lines := strings.Split(strings.TrimSpace(out), "\n")
				summaries = append(summaries, lines[len(lines)-1])
				m := nextPage.FindStringSubmatch(out)
				if m == nil {
					break
				}
				args = append(append([]string{"dlq", "list", "--nats-url", url}, c.args...), strings.Fields(m[1])...)
			}
			if !slices.Equal(got, c.want) || !slices.Equal(summaries, c.summary) {
				t.Fatalf("records %v\nsummaries %q\nwant %v\n%q", got, summaries, c.want, c.summary)
			}
		})
	}
}

// dryRunLine and replayLine are the summaries of a dry run and a replay.
var (
	dryRunLine = regexp.MustCompile(`dry run: would replay (\d+) records?, skip (\d+), refuse (\d+); nothing was changed`)
	replayLine = regexp.MustCompile(`replayed (\d+), already replayed (\d+), skipped (\d+), refused (\d+), failed (\d+) in`)
)

// TestReplayDryRunIsTheReplay: dlq replay --dry-run lists exactly the
// records the replay then republishes, and counts exactly the records it
// then skips (over --max-replays, unreadable) and refuses (forged).
func TestReplayDryRunIsTheReplay(t *testing.T) {
	url, js := serverWithStreams(t)
	for i := 1; i <= 5; i++ {
		storeRecord(t, js, "r-"+strconv.Itoa(i), uint64(i), 0) // 1-5: replayable
	}
	storeRecord(t, js, "capped", 6, 3)                                                     // 6: replayed 3 times: skipped
	if _, err := js.Publish(t.Context(), "dlq.echo", []byte("not a record")); err != nil { // 7: unreadable: skipped
		t.Fatal(err)
	}
	forged, _ := dlq.Encode(&dlq.Record{NodeType: "echo", Subject: "$JS.API.STREAM.PURGE.NODEQ_TASKS", Data: []byte("{}")})
	if _, err := js.Publish(t.Context(), "dlq.echo", forged); err != nil { // 8: refused
		t.Fatal(err)
	}
	storeRecord(t, js, "once", 9, 1) // 9: replayable

	replayedFrom := func(t *testing.T) []uint64 { // the records whose tasks are in the task stream
		t.Helper()
		st, err := js.Stream(t.Context(), "NODEQ_TASKS")
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(t.Context(), seq)
			if err != nil {
				t.Fatal(err)
			}
			_, from, _ := strings.Cut(m.Header.Get(dlq.HeaderReplayedFrom), ":")
			n, _ := strconv.ParseUint(from, 10, 64)
			seqs = append(seqs, n)
		}
		slices.Sort(seqs)
		return seqs
	}

	var replayed []uint64
	for _, c := range []struct {
		name     string
		flags    []string
		listed   []uint64 // by the dry run
		counts   []string // would replay, skip, refuse
		exitCode int      // of the replay
	}{
		{"limited", []string{"--limit", "2"}, []uint64{1, 2}, []string{"2", "0", "0"}, exitOK},
		{"the rest", nil, []uint64{3, 4, 5, 9}, []string{"4", "2", "1"}, exitFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"dlq", "replay", "--nats-url", url}, c.flags...)
			code, out, errOut := runProducer(t, "", append(args, "--dry-run")...)
			dry := dryRunLine.FindStringSubmatch(out)
			if code != exitOK || dry == nil || !slices.Equal(tableSeqs(t, out), c.listed) || !slices.Equal(dry[1:], c.counts) {
				t.Fatalf("dry run: exit %d, want records %v and counts %v:\n%s%s", code, c.listed, c.counts, out, errOut)
			}
			if got := replayedFrom(t); !slices.Equal(got, replayed) {
				t.Fatalf("the dry run replayed %v", got)
			}
			code, out, errOut = runProducer(t, "", append(args, "-q")...)
			real := replayLine.FindStringSubmatch(out)
			if code != c.exitCode || real == nil {
				t.Fatalf("replay: exit %d, want %d:\n%s%s", code, c.exitCode, out, errOut)
			}
			// Every record the dry run listed was replayed, none other; what it would skip and refuse, the replay did.
			if real[1] != dry[1] || real[2] != "0" || real[3] != dry[2] || real[4] != dry[3] || real[5] != "0" {
				t.Fatalf("dry run %q, replay %q", dry[0], real[0])
			}
			replayed = append(replayed, c.listed...)
			slices.Sort(replayed)
			if got := replayedFrom(t); !slices.Equal(got, replayed) {
				t.Fatalf("the task stream holds the tasks of records %v, want %v", got, replayed)
			}
		})
	}
	// What the dry run said would stay, stayed.
	code, out, _ := runProducer(t, "", "dlq", "list", "--oldest", "--nats-url", url)
	if got := tableSeqs(t, out); code != exitOK || !slices.Equal(got, []uint64{6, 7, 8}) {
		t.Fatalf("left %v:\n%s", got, out)
	}
}
