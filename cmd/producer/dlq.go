package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// dlqCmd groups the dead-letter commands.
func dlqCmd(a *app) *cobra.Command {
	ff := &filterFlags{}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead-lettered tasks",
		Long: `Inspect, replay and purge the dead-letter stream. Every subcommand takes the same
filters; all of them must match. Times are RFC 3339, a date, or an age (90m, 2h, 3d).
dlq stats groups the records by failure (node type, reason, error kind and the error
message with its numbers, IDs and addresses masked); --group ID selects one group.
replay and purge also take record sequences (SEQ...), from dlq list.`,
		Example: `  producer dlq stats
  producer dlq list --since 2h --kind Transport
  producer dlq list --group 3f2a9c81d0e4
  producer dlq replay --kind Transport --dry-run`,
	}
	asGroup(cmd)
	ff.register(cmd)
	cmd.AddCommand(listCmd(a, ff), showCmd(a), statsCmd(a, ff), replayCmd(a, ff), purgeCmd(a, ff))
	return cmd
}

// filterFlags are the record filters every dlq command shares.
type filterFlags struct {
	nodeTypes, kinds, reasons []string
	since, until              string
	taskID, match, group      string
}

func (ff *filterFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&ff.nodeTypes, "node-type", nil, "only these node types (repeatable or comma-separated)")
	pf.StringSliceVar(&ff.kinds, "kind", nil, "only these error kinds, any case: "+strings.Join(errorKinds(), ", "))
	pf.StringSliceVar(&ff.reasons, "reason", nil, "only these reasons: "+strings.Join(dlq.Reasons, ", "))
	pf.StringVar(&ff.since, "since", "", "only records stored at or after this time (e.g. 2h or 2026-11-28T09:00:00Z)")
	pf.StringVar(&ff.until, "until", "", "only records stored before this time")
	pf.StringVar(&ff.taskID, "task-id", "", "only this task's records")
	pf.StringVar(&ff.match, "match", "", "only records whose error message contains this text (case-insensitive)")
	pf.StringVar(&ff.group, "group", "", "only the records of this failure group (its ID, from dlq stats)")
}

// errorKinds lists the error kinds' names, in resilience's order.
func errorKinds() []string {
	var names []string
	for k := resilience.Kind(0); !strings.HasPrefix(k.String(), "Kind("); k++ { // Kind(9): past the last
		names = append(names, k.String())
	}
	return names
}

// filter checks the filter flags and returns the filter they make, with
// ages counted back from now.
func (ff *filterFlags) filter(now time.Time) (*dlq.Filter, error) {
	f := &dlq.Filter{NodeTypes: ff.nodeTypes, Kinds: ff.kinds, Reasons: ff.reasons, TaskID: ff.taskID, Match: ff.match}
	var err error
	if ff.since != "" {
		if f.Since, err = dlq.ParseTime(ff.since, now); err != nil {
			return nil, usagef("--since: %w", err)
		}
	}
	if ff.until != "" {
		if f.Until, err = dlq.ParseTime(ff.until, now); err != nil {
			return nil, usagef("--until: %w", err)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return nil, usagef("--since %s is not before --until %s: no record can match", ff.since, ff.until)
	}
	for _, t := range f.NodeTypes {
		if !task.ValidNodeType(t) && t != queue.InvalidNodeType {
			return nil, usagef("--node-type %q is not a node type", clip(t, 64))
		}
	}
	for _, k := range f.Kinds {
		if _, err := resilience.ParseKind(k); err != nil {
			return nil, usagef("--kind %q is not an error kind: want one of %s (any case)", clip(k, 64), strings.Join(errorKinds(), ", "))
		}
	}
	for _, r := range f.Reasons {
		if err := checkReason(r); err != nil {
			return nil, err
		}
	}
	if ff.group != "" {
		f.Group = strings.ToLower(ff.group)
		if !dlq.ValidGroupID(f.Group) {
			return nil, usagef("--group %q is not a group ID: want the 12 hexadecimal digits of the GROUP column of dlq stats", clip(ff.group, 64))
		}
	}
	if err := f.Validate(); err != nil { // what the checks above leave: the sizes of the lists
		return nil, &usageError{err}
	}
	return f, nil
}

// checkReason accepts exactly the reasons a consumer writes; for a near
// miss (a dash for an underscore, another case) it names the right one.
func checkReason(r string) error {
	if slices.Contains(dlq.Reasons, r) {
		return nil
	}
	norm := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(r), "-", "_"))
	for _, want := range dlq.Reasons {
		if norm == want {
			return usagef("--reason %q is not a reason; did you mean %s?", clip(r, 64), want)
		}
	}
	return usagef("--reason %q is not a reason: want one of %s", clip(r, 64), strings.Join(dlq.Reasons, ", "))
}

// maxSeqArgs caps the sequences one command names: more are a filter's job.
const maxSeqArgs = 1000

// parseSeqs reads record sequences given as arguments, sorted, without
// repeats. A sequence that is not a positive number is a usage error.
func parseSeqs(args []string) ([]uint64, error) {
	if len(args) > maxSeqArgs {
		return nil, usagef("%d record sequences: at most %d at a time; select more with filters (--group, --task-id, --match, ...)", len(args), maxSeqArgs)
	}
	seqs := make([]uint64, 0, len(args))
	for _, a := range args {
		seq, err := strconv.ParseUint(a, 10, 64)
		if err != nil || seq == 0 {
			return nil, usagef("SEQ %q: want a record sequence number (the SEQ column of dlq list)", clip(a, 64))
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	return slices.Compact(seqs), nil
}

// checkSeqs returns an error, wrapping dlq.ErrNotFound, naming every one of
// seqs that has no record, so that a mistyped sequence stops a command
// before it changes anything. verb says what was not done ("replayed").
func checkSeqs(ctx context.Context, st *dlq.Store, stream string, seqs []uint64, verb string) error {
	var missing []string
	for _, seq := range seqs {
		_, err := st.Get(ctx, seq)
		switch {
		case errors.Is(err, dlq.ErrNotFound):
			missing = append(missing, strconv.FormatUint(seq, 10))
		case err != nil:
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	names := "record " + missing[0]
	if len(missing) > 1 {
		const shown = 10
		list := missing[:min(len(missing), shown)]
		names = "records " + strings.Join(list[:len(list)-1], ", ") + " and " + list[len(list)-1]
		if len(missing) > shown {
			names = "records " + strings.Join(list, ", ") + fmt.Sprintf(" and %d more", len(missing)-shown)
		}
	}
	return fmt.Errorf("%s: %w in %s (replayed, purged or expired, or never stored: see dlq list); nothing was %s", names, dlq.ErrNotFound, stream, verb)
}

// plural returns "1 record" or "n records": n and the noun, with an s
// unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// listItem is one record in list and dry-run output, and list's JSON form.
type listItem struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	NodeType  string    `json:"node_type"`
	ErrorKind string    `json:"error_kind"`
	Reason    string    `json:"reason"`
	Replays   int       `json:"replays"`
	TaskID    string    `json:"task_id"`
	Error     string    `json:"error"`
}

func item(en dlq.Entry) listItem {
	if en.Record == nil {
		return listItem{Seq: en.Seq, Time: en.Time, NodeType: "?", ErrorKind: "?", Reason: "?", Error: "undecodable record: " + en.Err.Error()}
	}
	r := en.Record
	return listItem{Seq: en.Seq, Time: en.Time, NodeType: r.NodeType, ErrorKind: r.ErrorKind, Reason: r.Reason, Replays: r.ReplayCount(), TaskID: r.TaskID, Error: r.Error}
}

// printItems prints a table of records. Every field may come from a
// hand-written record: each cell is cleaned, then cut, so that no value,
// however long or full of escapes, can widen every row.
func printItems(w io.Writer, items []listItem) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTORED (UTC)\tNODE TYPE\tKIND\tREASON\tREPLAYS\tTASK ID\tERROR")
	for _, it := range items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", it.Seq, it.Time.UTC().Format("2006-01-02 15:04:05"), cell(it.NodeType, 64),
			cell(it.ErrorKind, 16), cell(it.Reason, 24), it.Replays, cell(it.TaskID, 64), cell(fold(it.Error), 60))
	}
	tw.Flush()
}

// cell returns s for a table cell of at most n runes: cleaned (clean), then
// cut (clip), so that escaping cannot make it wider.
func cell(s string, n int) string { return clip(clean(s), n) }

// fold puts s on one line, with runs of white space as one space.
func fold(s string) string { return strings.Join(strings.Fields(s), " ") }

// clip cuts s to n runes, marking the cut, without touching its spacing.
// It reads no further into s than it keeps: s may be megabytes.
func clip(s string, n int) string {
	i := 0
	for range n - 1 {
		if i >= len(s) {
			return s
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if i >= len(s) {
		return s
	}
	if _, size := utf8.DecodeRuneInString(s[i:]); i+size == len(s) {
		return s // exactly n runes
	}
	return s[:i] + "…"
}
