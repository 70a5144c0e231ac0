package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// filterFlags are the record filters every dlq command shares.
type filterFlags struct {
	nodeTypes, kinds, reasons []string
	since, until              string
	taskID, match             string
	stream, prefix            string
}

func (ff *filterFlags) filter(now time.Time) (*dlq.Filter, error) {
	f := &dlq.Filter{NodeTypes: ff.nodeTypes, Kinds: ff.kinds, Reasons: ff.reasons, TaskID: ff.taskID, Match: ff.match}
	var err error
	if ff.since != "" {
		if f.Since, err = dlq.ParseTime(ff.since, now); err != nil {
			return nil, usageError{fmt.Errorf("--since: %w", err)}
		}
	}
	if ff.until != "" {
		if f.Until, err = dlq.ParseTime(ff.until, now); err != nil {
			return nil, usageError{fmt.Errorf("--until: %w", err)}
		}
	}
	for _, t := range f.NodeTypes {
		if !task.ValidNodeType(t) && t != queue.InvalidNodeType {
			return nil, usageError{fmt.Errorf("--node-type %q is not a node type", t)}
		}
	}
	return f, nil
}

// dlqCmd groups the dead-letter commands.
func dlqCmd(ctx context.Context, e *env, conn *connFlags) *cobra.Command {
	ff := &filterFlags{}
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead-lettered tasks",
		Long: `Inspect, replay and purge the dead-letter stream. Every subcommand takes the same
filters; all of them must match. Times are RFC 3339, a date, or an age (90m, 2h, 3d).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringSliceVar(&ff.nodeTypes, "node-type", nil, "only these node types (repeatable or comma-separated)")
	pf.StringSliceVar(&ff.kinds, "kind", nil, "only these error kinds, e.g. Transport")
	pf.StringSliceVar(&ff.reasons, "reason", nil, "only these reasons: invalid, unknown_node_type, permanent_error, retries_exhausted, deadline_exceeded, poison")
	pf.StringVar(&ff.since, "since", "", "only records stored at or after this time (e.g. 2h or 2026-11-28T09:00:00Z)")
	pf.StringVar(&ff.until, "until", "", "only records stored before this time")
	pf.StringVar(&ff.taskID, "task-id", "", "only this task's records")
	pf.StringVar(&ff.match, "match", "", "only records whose error message contains this text (case-insensitive)")
	pf.StringVar(&ff.stream, "dlq-stream", queue.DefaultNames().DLQStream, "dead-letter stream (names.dlq_stream)")
	pf.StringVar(&ff.prefix, "dlq-prefix", queue.DefaultNames().DLQPrefix, "dead-letter subject prefix (names.dlq_prefix)")

	open := func() (*dlq.Store, func(), error) {
		nc, js, err := conn.connect(quietLog(e))
		if err != nil {
			return nil, nil, err
		}
		return dlq.NewStore(js, ff.stream, ff.prefix), nc.Close, nil
	}
	cmd.AddCommand(dlqListCmd(ctx, e, ff, open), dlqShowCmd(ctx, e, open), dlqStatsCmd(ctx, e, ff, open),
		dlqReplayCmd(ctx, e, ff, open), dlqPurgeCmd(ctx, e, ff, open))
	return cmd
}

type opener func() (*dlq.Store, func(), error)

// with parses the filters, connects, and runs fn with the store and filter.
func (ff *filterFlags) with(open opener, fn func(st *dlq.Store, f *dlq.Filter) error) error {
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	st, closeConn, err := open()
	if err != nil {
		return err
	}
	defer closeConn()
	return fn(st, f)
}

// listItem is one record in list output.
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

// shorten folds s onto one line and cuts it to n runes.
func shorten(s string, n int) string { return clip(strings.Join(strings.Fields(s), " "), n) }

// clip cuts s to n runes, marking the cut, without touching its spacing.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

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

func dlqListCmd(ctx context.Context, e *env, ff *filterFlags, open opener) *cobra.Command {
	var limit int
	var oldest, asJSON bool
	var before, after uint64
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List records, newest first, a page at a time",
		Example: `  producer dlq list --node-type resize --since 2h
  producer dlq list --kind Transport --match timeout --json
  producer dlq list --before-seq 4812        # the next (older) page`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ff.with(open, func(st *dlq.Store, f *dlq.Filter) error {
				f.BeforeSeq, f.AfterSeq = before, after
				var items []listItem
				matched := 0
				errPage := errors.New("page full")
				err := st.Scan(ctx, f, 0, func(en dlq.Entry) error {
					matched++
					if oldest {
						if len(items) == limit {
							return errPage
						}
						items = append(items, item(en))
						return nil
					}
					items = append(items, item(en)) // keep the newest `limit`
					if len(items) > limit {
						items = items[1:]
					}
					return nil
				})
				if err != nil && !errors.Is(err, errPage) {
					return err
				}
				if !oldest {
					for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
						items[i], items[j] = items[j], items[i]
					}
				}
				if asJSON {
					for _, it := range items {
						if err := writeJSON(e.stdout, it); err != nil {
							return err
						}
					}
					return nil
				}
				if len(items) == 0 {
					fmt.Fprintln(e.stdout, "no matching records")
					return nil
				}
				printItems(e.stdout, items)
				switch {
				case oldest && errors.Is(err, errPage):
					fmt.Fprintf(e.stdout, "\n%d records, oldest first; next page: --oldest --after-seq %d\n", len(items), items[len(items)-1].Seq)
				case oldest:
					fmt.Fprintf(e.stdout, "\n%d records, oldest first\n", len(items))
				case matched > len(items):
					fmt.Fprintf(e.stdout, "\n%d of %d matching records, newest first; next page: --before-seq %d\n", len(items), matched, items[len(items)-1].Seq)
				default:
					fmt.Fprintf(e.stdout, "\n%d matching records, newest first\n", matched)
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&limit, "limit", "n", 50, "records per page")
	fl.BoolVar(&oldest, "oldest", false, "oldest first")
	fl.Uint64Var(&before, "before-seq", 0, "only records with a lower sequence (next page, newest first)")
	fl.Uint64Var(&after, "after-seq", 0, "only records with a higher sequence (next page, oldest first)")
	fl.BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

// shownRecord is show's JSON form.
type shownRecord struct {
	Seq     uint64      `json:"seq"`
	Stored  time.Time   `json:"stored"`
	Record  *dlq.Record `json:"record"`
	Task    any         `json:"task,omitempty"`
	TaskErr string      `json:"task_error,omitempty"`
	Payload any         `json:"payload,omitempty"`
	DataHex string      `json:"data_hex,omitempty"`
}

func dlqShowCmd(ctx context.Context, e *env, open opener) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one record in full: context, stack trace, headers, payload",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("SEQ %q: want a record sequence number from list", args[0])}
			}
			st, closeConn, err := open()
			if err != nil {
				return err
			}
			defer closeConn()
			en, err := st.Get(ctx, seq)
			if err != nil {
				return err
			}
			if en.Err != nil {
				return fmt.Errorf("record %d is not a nodeq dead-letter record: %w", seq, en.Err)
			}
			if asJSON {
				return writeJSON(e.stdout, describe(en))
			}
			printRecord(e.stdout, en)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// describe decodes the original task for display.
func describe(en *dlq.Entry) shownRecord {
	r := en.Record
	out := shownRecord{Seq: en.Seq, Stored: en.Time, Record: r}
	var ct string
	if vs := r.Headers[queue.HeaderContentType]; len(vs) > 0 {
		ct = vs[0]
	}
	env, err := task.Decode(r.Data, ct)
	if err != nil {
		out.TaskErr = err.Error()
		out.DataHex = hex.EncodeToString(r.Data)
		return out
	}
	t := map[string]any{"v": env.Version, "id": env.ID, "node_type": env.NodeType, "payload_encoding": env.PayloadEncoding.String()}
	for k, v := range map[string]string{"node_id": env.NodeID, "correlation_id": env.CorrelationID, "reply_to": env.ReplyTo} {
		if v != "" {
			t[k] = v
		}
	}
	if len(env.Params) > 0 {
		t["params"] = env.Params
	}
	if !env.CreatedAt.IsZero() {
		t["created_at"] = env.CreatedAt
	}
	if !env.Deadline.IsZero() {
		t["deadline"] = env.Deadline
	}
	out.Task = t
	out.Payload = decodePayload(env)
	return out
}

// decodePayload returns the payload as a displayable value: JSON and msgpack
// decoded, UTF-8 text as a string, other bytes as hex.
func decodePayload(env *task.Envelope) any {
	// Decoding into Go values can cost 100 times the payload's size:
	// a record's payload is a producer's, so count its values first.
	if n := task.CountValues(env.Payload, env.PayloadEncoding); n > task.MaxParamValues || n < 0 {
		return map[string]string{"hex": hex.EncodeToString(env.Payload)}
	}
	if env.PayloadEncoding == task.PayloadBytes && task.CountValues(env.Payload, task.PayloadJSON) > task.MaxParamValues {
		if utf8.Valid(env.Payload) {
			return string(env.Payload)
		}
		return map[string]string{"hex": hex.EncodeToString(env.Payload)}
	}
	switch env.PayloadEncoding {
	case task.PayloadJSON:
		var v any
		if json.Unmarshal(env.Payload, &v) == nil {
			return v
		}
	case task.PayloadMsgpack:
		var v any
		if task.UnmarshalMsgpack(env.Payload, &v) == nil {
			return v
		}
	}
	var v any
	if json.Unmarshal(env.Payload, &v) == nil {
		return v
	}
	if utf8.Valid(env.Payload) {
		return string(env.Payload)
	}
	return map[string]string{"hex": hex.EncodeToString(env.Payload)}
}

// printRecord prints a record for a terminal: every text that comes from
// the record is passed through clean (or cleanText, cleanJSON).
func printRecord(w io.Writer, en *dlq.Entry) {
	r := en.Record
	d := describe(en)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%s\n", k, clean(fmt.Sprint(v))) }
	row("seq", en.Seq)
	row("stored", en.Time.UTC().Format(time.RFC3339Nano))
	row("reason", r.Reason)
	row("task id", r.TaskID)
	row("node id", r.NodeID)
	row("node type", r.NodeType)
	row("correlation id", r.CorrelationID)
	row("error kind", r.ErrorKind)
	row("error", r.Error)
	row("attempts", fmt.Sprintf("%d in the last of %d deliveries", r.Attempts, r.Deliveries))
	row("replays", r.ReplayCount())
	row("first failure", r.FirstFailure.UTC().Format(time.RFC3339Nano))
	row("last failure", r.LastFailure.UTC().Format(time.RFC3339Nano))
	row("worker", r.Worker)
	row("original", fmt.Sprintf("%s (stream %s, seq %d)", r.Subject, r.Stream, r.Sequence))
	row("nodeq version", r.NodeqVersion)
	tw.Flush()
	if len(r.Causes) > 1 {
		fmt.Fprintln(w, "\ncause chain:")
		for i, c := range r.Causes {
			fmt.Fprintf(w, "  %d. %s\n", i+1, clean(c))
		}
	}
	if r.Stack != "" {
		fmt.Fprintf(w, "\nstack trace:\n%s\n", cleanText(strings.TrimRight(r.Stack, "\n")))
	}
	fmt.Fprintln(w, "\nheaders:")
	keys := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Headers[k] {
			fmt.Fprintf(w, "  %s: %s\n", clean(k), clean(v))
		}
	}
	if d.TaskErr != "" {
		fmt.Fprintf(w, "\noriginal message (%d bytes, not a readable task: %s):\n%s", len(r.Data), clean(d.TaskErr), hex.Dump(r.Data))
		return
	}
	b, _ := json.MarshalIndent(d.Task, "  ", "  ")
	fmt.Fprintf(w, "\ntask:\n  %s\n", cleanJSON(b))
	p, _ := json.MarshalIndent(d.Payload, "  ", "  ")
	fmt.Fprintf(w, "\npayload:\n  %s\n", cleanJSON(p))
}

func dlqStatsCmd(ctx context.Context, e *env, ff *filterFlags, open opener) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count records by node type and error kind, with a sample message",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ff.with(open, func(st *dlq.Store, f *dlq.Filter) error {
				groups, total, err := st.Stats(ctx, f)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.stdout, map[string]any{"total": total, "groups": groups})
				}
				if total == 0 {
					fmt.Fprintln(e.stdout, "no matching records")
					return nil
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE TYPE\tKIND\tCOUNT\tFIRST (UTC)\tLAST (UTC)\tMESSAGES\tMOST COMMON MESSAGE")
				for _, g := range groups {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s (%d)\n", clean(clip(g.NodeType, 64)), clean(clip(g.ErrorKind, 16)), g.Count, g.First.UTC().Format("2006-01-02 15:04:05"),
						g.Last.UTC().Format("2006-01-02 15:04:05"), g.Distinct, clean(shorten(g.Sample, 60)), g.SampleN)
				}
				tw.Flush()
				fmt.Fprintf(e.stdout, "\n%d records in %d groups\n", total, len(groups))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// parseRate reads "100", "100/s", "600/m" or "3600/h" as records per second.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	per := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}[unit]
	if err != nil || n <= 0 || per == 0 {
		return 0, fmt.Errorf("--rate %q: want N/s, N/m or N/h, e.g. 50/s", s)
	}
	return n / per, nil
}

func dlqReplayCmd(ctx context.Context, e *env, ff *filterFlags, open opener) *cobra.Command {
	var o dlq.ReplayOptions
	var rateStr string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Republish the selected records' tasks, then delete the records",
		Long: `Republish the original task of every selected record (oldest first, 32 at a time) to its original
subject, or --to another, and delete each record once JetStream has stored its task.
The selection is fixed when the replay starts. A replay that is interrupted can simply be
run again: within the task stream's duplicate window (2 minutes) a record already
republished is recognised and only deleted. Tasks replayed --max-replays times are skipped
unless --force.`,
		Example: `  producer dlq replay --node-type resize --kind Transport --dry-run
  producer dlq replay --node-type resize --kind Transport --rate 50/s
  producer dlq replay --task-id 7hX2kq --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Rate, err = parseRate(rateStr); err != nil {
				return usageError{err}
			}
			if o.To != "" {
				if _, err := dlq.ReplayTo(o.TaskPrefix, o.To); err != nil {
					return usageError{err}
				}
			}
			return ff.with(open, func(st *dlq.Store, f *dlq.Filter) error {
				if o.DryRun {
					return dryRun(ctx, e, st, f, o)
				}
				var bar *progressbar.ProgressBar
				if !quiet && isTerminal(e.stderr) {
					total := 0
					if err := st.Scan(ctx, f, 0, func(dlq.Entry) error { total++; return nil }); err != nil {
						return err
					}
					if o.Limit > 0 {
						total = min(total, o.Limit)
					}
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("replaying"),
						progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("records"),
						progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
					o.Progress = func(s dlq.ReplaySummary) { _ = bar.Set(s.Selected) }
				}
				start := time.Now()
				sum, err := st.Replay(ctx, f, o)
				if bar != nil {
					_ = bar.Finish()
				}
				took := time.Since(start)
				fmt.Fprintf(e.stdout, "replayed %d, already replayed %d, skipped %d, refused %d, failed %d in %v (%.0f records/s)\n",
					sum.Replayed, sum.Duplicates, sum.Skipped, sum.Refused, sum.Failed, took.Round(time.Millisecond), float64(sum.Replayed+sum.Duplicates)/max(took.Seconds(), 1e-9))
				if sum.Skipped > 0 {
					fmt.Fprintf(e.stdout, "skipped records stay in the dead-letter queue: replayed %d times already (--max-replays) or unreadable; --force replays them\n", o.MaxReplays)
				}
				if sum.Refused > 0 {
					fmt.Fprintf(e.stdout, "refused records stay in the dead-letter queue: they name no task subject under %s.> that matches where they are stored (see below)\n", o.TaskPrefix)
				}
				for _, msg := range sum.Errors {
					fmt.Fprintln(e.stderr, msg)
				}
				if err != nil {
					return fmt.Errorf("replay stopped: %w (run it again to continue; nothing is lost or duplicated)", err)
				}
				if sum.Failed+sum.Refused > 0 {
					return fmt.Errorf("%d records could not be replayed and stay in the dead-letter queue", sum.Failed+sum.Refused)
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.To, "to", "", "republish to this node type (or tasks.<node_type>) instead of each task's own")
	fl.StringVar(&o.TaskPrefix, "task-prefix", queue.DefaultNames().TaskPrefix, "task subject prefix (names.task_prefix): tasks are only republished on <prefix>.<node_type>")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print what would be replayed and the count; change nothing")
	fl.IntVar(&o.Limit, "limit", 0, "replay at most N records")
	fl.StringVar(&rateStr, "rate", "", "at most this many per second (N/s, N/m, N/h); default as fast as JetStream acknowledges")
	fl.IntVar(&o.MaxReplays, "max-replays", 3, "skip tasks already replayed this many times (0: no cap)")
	fl.BoolVar(&o.Force, "force", false, "replay even tasks over --max-replays")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

func dryRun(ctx context.Context, e *env, st *dlq.Store, f *dlq.Filter, o dlq.ReplayOptions) error {
	var items []listItem
	skipped := 0
	var refused []string
	errLimit := errors.New("limit")
	err := st.Scan(ctx, f, 0, func(en dlq.Entry) error {
		if o.Limit > 0 && len(items) >= o.Limit {
			return errLimit
		}
		if _, err := st.Target(en, o); errors.Is(err, dlq.ErrRefused) {
			refused = append(refused, err.Error())
			return nil
		} else if err != nil {
			skipped++
			return nil
		}
		items = append(items, item(en))
		return nil
	})
	if err != nil && !errors.Is(err, errLimit) {
		return err
	}
	if len(items) > 0 {
		printItems(e.stdout, items)
		fmt.Fprintln(e.stdout)
	}
	for _, r := range refused {
		fmt.Fprintln(e.stdout, r)
	}
	fmt.Fprintf(e.stdout, "dry run: would replay %d records, skip %d, refuse %d; nothing was changed\n", len(items), skipped, len(refused))
	return nil
}

func dlqPurgeCmd(ctx context.Context, e *env, ff *filterFlags, open opener) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete the selected records (asks first unless --yes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ff.with(open, func(st *dlq.Store, f *dlq.Filter) error {
				if !yes {
					n := 0
					if err := st.Scan(ctx, f, 0, func(dlq.Entry) error { n++; return nil }); err != nil {
						return err
					}
					if n == 0 {
						fmt.Fprintln(e.stdout, "no matching records")
						return nil
					}
					what := "matching records"
					if f.IsZero() {
						what = "records (the whole dead-letter queue)"
					}
					fmt.Fprintf(e.stderr, "Delete %d %s? This cannot be undone. [y/N] ", n, what)
					answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
					if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
						return errors.New("purge cancelled; nothing was deleted")
					}
				}
				n, err := st.Purge(ctx, f)
				fmt.Fprintf(e.stdout, "purged %d records\n", n)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
