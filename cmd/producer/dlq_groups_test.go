package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/dlq"
)

// putRecord stores r on dlq.<nodeType> raw, as anyone able to publish
// there may: nothing in it is checked or cut.
func putRecord(t *testing.T, js jetstream.JetStream, nodeType string, r *dlq.Record) {
	t.Helper()
	b, err := dlq.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("dlq." + nodeType)
	msg.Data = b
	msg.Header.Set("Content-Type", dlq.ContentType)
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
}

// failure is the record of echo task id, which failed with msg.
func failure(id, reason, kind, msg string) *dlq.Record {
	return &dlq.Record{Reason: reason, TaskID: id, NodeType: "echo", ErrorKind: kind, Error: msg, Subject: "tasks.echo", Stream: "NODEQ_TASKS",
		Data: []byte(`{"id":"` + id + `","node_type":"echo"}`), Headers: map[string][]string{"Content-Type": {"application/json"}}}
}

// producerIn returns a function that runs producer against the server at url.
func producerIn(t *testing.T, url string) func(stdin string, args ...string) (int, string, string) {
	return func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		return runProducer(t, stdin, append(args, "--nats-url", url)...)
	}
}

// jsonSeqs returns the seq of each line of dlq list --json.
func jsonSeqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var it listItem
		if err := json.Unmarshal([]byte(line), &it); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seqs = append(seqs, it.Seq)
	}
	return seqs
}

// keysOf returns the sorted keys of the JSON object b.
func keysOf(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return slices.Sorted(maps.Keys(m))
}

// TestDLQStatsGroups: dlq stats shows one row per failure group, numbers
// and addresses masked, with the group's ID; --group ID selects exactly
// that group's records in list, replay --dry-run and purge.
func TestDLQStatsGroups(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	for i := 1; i <= 3; i++ { // 1-3: one failure, three messages
		putRecord(t, js, "echo", failure(fmt.Sprint("t-", i), dlq.ReasonExhausted, "Transport", fmt.Sprintf("dial tcp 10.0.0.%d:5432: i/o timeout after %ds", i, 30+i)))
	}
	putRecord(t, js, "echo", failure("t-4", dlq.ReasonPermanent, "Manifest", "width must be positive"))                      // 4
	putRecord(t, js, "echo", failure("t-5", dlq.ReasonExhausted, "Transport", "dial tcp 10.0.0.9:5432: connection refused")) // 5

	code, out, errOut := producer("", "dlq", "stats")
	if code != exitOK || !strings.Contains(out, "\n5 records in 3 groups; a group's records: dlq list --group ") ||
		!regexpLine(out, "GROUP", "NODE TYPE", "REASON", "KIND", "COUNT", "FIRST (UTC)", "LAST (UTC)", "MESSAGES", "FINGERPRINT") ||
		!regexpLine(out, "echo", "retries_exhausted", "Transport", "3", "3", "dial tcp <addr>: i/o timeout after <n>s") ||
		!regexpLine(out, "echo", "permanent_error", "Manifest", "1", "1", "width must be positive") {
		t.Fatalf("stats: exit %d:\n%s%s", code, out, errOut)
	}

	code, out, _ = producer("", "dlq", "stats", "--json")
	if got := keysOf(t, []byte(out)); code != exitOK || !slices.Equal(got, []string{"groups", "total"}) {
		t.Fatalf("stats --json: exit %d, keys %v:\n%s", code, got, out)
	}
	var stats struct {
		Total  int               `json:"total"`
		Groups []json.RawMessage `json:"groups"`
	}
	if err := json.Unmarshal([]byte(out), &stats); err != nil || stats.Total != 5 || len(stats.Groups) != 3 {
		t.Fatalf("stats --json: %v:\n%s", err, out)
	}
	wantKeys := []string{"count", "distinct_messages", "error_kind", "fingerprint", "first_seen", "first_seq", "id", "last_seen", "last_seq", "node_type", "reason", "sample"}
	bySeqs := map[string][]uint64{} // group ID -> its records
	var timeout, manifest string
	for _, raw := range stats.Groups {
		if got := keysOf(t, raw); !slices.Equal(got, wantKeys) {
			t.Fatalf("a group's keys: %v, want %v", got, wantKeys)
		}
		var g dlq.Group
		if err := json.Unmarshal(raw, &g); err != nil || !dlq.ValidGroupID(g.ID) {
			t.Fatalf("group %s: %v", raw, err)
		}
		switch g.Fingerprint {
		case "dial tcp <addr>: i/o timeout after <n>s":
			timeout = g.ID
			bySeqs[g.ID] = []uint64{1, 2, 3}
			if g.Count != 3 || g.Distinct != 3 || g.FirstSeq != 1 || g.LastSeq != 3 || g.Sample != "dial tcp 10.0.0.3:5432: i/o timeout after 33s" {
				t.Errorf("timeout group %s", raw)
			}
		case "width must be positive":
			manifest = g.ID
			bySeqs[g.ID] = []uint64{4}
		case "dial tcp <addr>: connection refused":
			bySeqs[g.ID] = []uint64{5}
		default:
			t.Fatalf("unexpected group %s", raw)
		}
	}

	for id, want := range bySeqs {
		t.Run(id, func(t *testing.T) {
			code, out, errOut := producer("", "dlq", "list", "--oldest", "--json", "--group", id)
			if got := jsonSeqs(t, out); code != exitOK || !slices.Equal(got, want) {
				t.Fatalf("list --group: exit %d, records %v, want %v: %s", code, got, want, errOut)
			}
			code, out, errOut = producer("", "dlq", "replay", "--dry-run", "--group", id)
			if got := tableSeqs(t, out); code != exitOK || !slices.Equal(got, want) {
				t.Fatalf("replay --group --dry-run: exit %d, records %v, want %v:\n%s%s", code, got, want, out, errOut)
			}
		})
	}
	// Singular and plural; an ID in capitals is the same ID.
	code, out, _ = producer("", "dlq", "stats", "--group", strings.ToUpper(manifest))
	if code != exitOK || !strings.Contains(out, "\n1 record in 1 group;") {
		t.Fatalf("stats of one group: exit %d:\n%s", code, out)
	}
	code, out, _ = producer("", "dlq", "replay", "--dry-run", "--group", manifest)
	if code != exitOK || !strings.Contains(out, "dry run: would replay 1 record, skip 0, refuse 0") {
		t.Fatalf("dry run of one record: exit %d:\n%s", code, out)
	}
	code, out, _ = producer("", "dlq", "list", "--group", manifest)
	if code != exitOK || !strings.Contains(out, "\n1 matching record, newest first\n") {
		t.Fatalf("list of one record: exit %d:\n%s", code, out)
	}

	code, out, errOut = producer("", "dlq", "purge", "--group", timeout, "--yes")
	if code != exitOK || out != "purged 3 records\n" {
		t.Fatalf("purge --group: exit %d: %q %s", code, out, errOut)
	}
	code, out, _ = producer("", "dlq", "list", "--oldest", "--json")
	if got := jsonSeqs(t, out); code != exitOK || !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("left %v, want [4 5]", got)
	}
	code, out, _ = producer("", "dlq", "stats", "--json", "--group", timeout)
	if code != exitOK || out != `{"total":0,"groups":[]}`+"\n" {
		t.Fatalf("stats of an empty group: exit %d: %q", code, out)
	}
}

// TestDLQReplayPurgeJSON: replay --json prints one summary object (a dry
// run's with the records it would replay), purge --json {"purged":N}; a
// purge that would have to ask cannot print JSON.
func TestDLQReplayPurgeJSON(t *testing.T) {
	url, js := serverWithStreams(t)
	producer := producerIn(t, url)
	for i := 1; i <= 3; i++ {
		putRecord(t, js, "echo", failure(fmt.Sprint("j-", i), dlq.ReasonExhausted, "Transport", "down"))
	}
	forged := failure("j-4", dlq.ReasonExhausted, "Transport", "down")
	forged.Subject = "$JS.API.STREAM.PURGE.NODEQ_TASKS"
	putRecord(t, js, "echo", forged) // 4: refused

	summaryKeys := []string{"dry_run", "duplicates", "errors", "failed", "refused", "replayed", "selected", "skipped"}
	var sum struct {
		DryRun  bool       `json:"dry_run"`
		Errors  []string   `json:"errors"`
		Records []listItem `json:"records"`
	}
	counts := func(out string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return m
	}

	code, out, errOut := producer("", "dlq", "replay", "--dry-run", "--json")
	if got := keysOf(t, []byte(out)); code != exitOK || !slices.Equal(got, slices.Sorted(slices.Values(append(slices.Clone(summaryKeys), "records")))) || strings.Count(out, "\n") != 1 {
		t.Fatalf("dry run: exit %d, keys %v:\n%s%s", code, got, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || !sum.DryRun || len(sum.Records) != 3 || sum.Records[2].TaskID != "j-3" ||
		len(sum.Errors) != 1 || !strings.Contains(sum.Errors[0], "refused: record 4") {
		t.Fatalf("dry run: %v %+v", err, sum)
	}
	if m := counts(out); m["selected"] != 4.0 || m["replayed"] != 3.0 || m["refused"] != 1.0 || m["skipped"] != 0.0 {
		t.Fatalf("dry run counts %v", m)
	}
	// A record's item in the dry run has list --json's keys.
	var items struct {
		Records []json.RawMessage `json:"records"`
	}
	_ = json.Unmarshal([]byte(out), &items)
	if got := keysOf(t, items.Records[0]); !slices.Equal(got, []string{"error", "error_kind", "node_type", "reason", "replays", "seq", "task_id", "time"}) {
		t.Fatalf("dry run record keys %v", got)
	}

	code, out, errOut = producer("", "dlq", "replay", "1", "--json", "-q")
	if got := keysOf(t, []byte(out)); code != exitOK || !slices.Equal(got, summaryKeys) {
		t.Fatalf("replay 1: exit %d, keys %v:\n%s%s", code, got, out, errOut)
	}
	if m := counts(out); m["dry_run"] != false || m["selected"] != 1.0 || m["replayed"] != 1.0 || len(m["errors"].([]any)) != 0 {
		t.Fatalf("replay 1: %v", m)
	}

	code, out, errOut = producer("", "dlq", "replay", "--json", "-q")
	if m := counts(out); code != exitFailed || m["replayed"] != 2.0 || m["refused"] != 1.0 || !strings.Contains(errOut, "1 record could not be replayed") {
		t.Fatalf("replay with a refusal: exit %d, %v: %s", code, m, errOut)
	}

	code, out, errOut = producer("y\n", "dlq", "purge", "--json")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "--json needs --yes") {
		t.Fatalf("purge --json without --yes: exit %d: %q %s", code, out, errOut)
	}
	code, out, _ = producer("", "dlq", "purge", "4", "--json", "--yes")
	if code != exitOK || out != `{"purged":1}`+"\n" {
		t.Fatalf("purge 4: exit %d: %q", code, out)
	}
	code, out, _ = producer("", "dlq", "purge", "--json", "--yes")
	if code != exitOK || out != `{"purged":0}`+"\n" {
		t.Fatalf("purge of nothing: exit %d: %q", code, out)
	}
}

// TestStatsListsTheLargestGroups: with more groups than a table shows,
// stats lists the largest maxGroupRows and says how many more there are;
// --json lists them all.
func TestStatsListsTheLargestGroups(t *testing.T) {
	url, js := serverWithStreams(t)
	for i := range maxGroupRows + 3 {
		putRecord(t, js, "echo", failure(fmt.Sprint("t", i), dlq.ReasonPermanent, "Manifest", "failure "+strings.Repeat("x", i+1)))
	}
	producer := producerIn(t, url)
	code, out, errOut := producer("", "dlq", "stats")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if rows := strings.Count(out, "permanent_error"); rows != maxGroupRows {
		t.Errorf("%d rows, want %d", rows, maxGroupRows)
	}
	if !strings.Contains(out, "... and 3 groups not listed, none larger (--json lists every group)") || !strings.Contains(out, fmt.Sprintf("%d records in %d groups", maxGroupRows+3, maxGroupRows+3)) {
		t.Errorf("footer:\n%s", out[max(0, len(out)-300):])
	}
	code, out, _ = producer("", "dlq", "stats", "--json")
	var got statsJSON
	if err := json.Unmarshal([]byte(out), &got); code != exitOK || err != nil || len(got.Groups) != maxGroupRows+3 {
		t.Errorf("--json: exit %d, %d groups, %v", code, len(got.Groups), err)
	}
}
