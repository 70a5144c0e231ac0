package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// dlqCmd groups the dead-letter commands.
func dlqCmd(a *app) *cobra.Command {
	ff := &filterFlags{}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead-lettered tasks",
		Long: `Inspect, replay and purge the dead-letter stream. Every subcommand takes the same
filters; all of them must match. Times are RFC 3339, a date, or an age (90m, 2h, 3d).`,
		Example: `  producer dlq stats
  producer dlq list --since 2h --kind Transport
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
	taskID, match             string
}

func (ff *filterFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&ff.nodeTypes, "node-type", nil, "only these node types (repeatable or comma-separated)")
	pf.StringSliceVar(&ff.kinds, "kind", nil, "only these error kinds, e.g. Transport")
	pf.StringSliceVar(&ff.reasons, "reason", nil, "only these reasons: invalid, unknown_node_type, permanent_error, retries_exhausted, deadline_exceeded, poison")
	pf.StringVar(&ff.since, "since", "", "only records stored at or after this time (e.g. 2h or 2026-11-28T09:00:00Z)")
	pf.StringVar(&ff.until, "until", "", "only records stored before this time")
	pf.StringVar(&ff.taskID, "task-id", "", "only this task's records")
	pf.StringVar(&ff.match, "match", "", "only records whose error message contains this text (case-insensitive)")
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
			return nil, usagef("--node-type %q is not a node type", t)
		}
	}
	return f, nil
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

// printItems prints a table of records.
func printItems(w io.Writer, items []listItem) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTORED (UTC)\tNODE TYPE\tKIND\tREASON\tREPLAYS\tTASK ID\tERROR")
	for _, it := range items {
		// Every field may come from a hand-written record: cut them all, so
		// that one long value cannot pad every row.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", it.Seq, it.Time.UTC().Format("2006-01-02 15:04:05"), clean(clip(it.NodeType, 64)),
			clean(clip(it.ErrorKind, 16)), clean(clip(it.Reason, 20)), it.Replays, clean(clip(it.TaskID, 64)), clean(shorten(it.Error, 60)))
	}
	tw.Flush()
}

// shorten folds s onto one line and cuts it to n runes.
func shorten(s string, n int) string { return clip(strings.Join(strings.Fields(s), " "), n) }

// clip cuts s to n runes, marking the cut, without touching its spacing.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
