package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// replayCommand republishes the selected records' tasks, or with --dry-run
// says which it would, by the same code.
type replayCommand struct {
	*app
	filters *filterFlags
	opts    dlq.ReplayOptions
	rate    string
	quiet   bool
	asJSON  bool
	args    []string

	filter *dlq.Filter // by validate
}

func replayCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &replayCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:   "replay [SEQ...]",
		Short: "Republish the selected records' tasks, then delete the records",
		Long: `Republish the original task of every selected record (oldest first, 32 at a time) on its
own task subject, and delete each record once JetStream has stored its task.
Records are selected by the filters, by sequence (SEQ..., from dlq list: the way to
name a record whose task had no readable ID), or both. If any SEQ has no record, nothing
is replayed and the command exits 1.
The selection is fixed when the replay starts. A replay that is interrupted can simply be
run again: within the task stream's duplicate window (2 minutes) a record already
republished is recognised and only deleted. Tasks replayed --max-replays times are skipped
unless --force. --dry-run goes through the same selection and rules and prints what the
replay would do, changing nothing.`,
		Example: `  producer dlq replay --node-type resize --kind Transport --dry-run
  producer dlq replay --node-type resize --kind Transport --rate 50/s
  producer dlq replay --group 3f2a9c81d0e4 --dry-run
  producer dlq replay 4 --json               # one record, by its sequence
  producer dlq replay --task-id 7hX2kq --force`,
		Args: cobra.ArbitraryArgs,
	}
	fl := cmd.Flags()
	fl.StringVar(&c.opts.To, "to", "", "republish on the task subject of this node type (or <task prefix>.<node_type>): a record's own node type, for records stored under another task prefix; a record of another node type is refused")
	fl.BoolVar(&c.opts.DryRun, "dry-run", false, "print what would be replayed, skipped and refused; change nothing")
	fl.IntVar(&c.opts.Limit, "limit", 0, "replay at most N records (0: all)")
	fl.StringVar(&c.rate, "rate", "", "at most this many per second (N/s, N/m, N/h); default as fast as JetStream acknowledges")
	fl.IntVar(&c.opts.MaxReplays, "max-replays", 3, "skip tasks already replayed this many times (0: no cap)")
	fl.BoolVar(&c.opts.Force, "force", false, "replay even tasks over --max-replays")
	fl.BoolVarP(&c.quiet, "quiet", "q", false, "no progress bar")
	fl.BoolVar(&c.asJSON, "json", false, "print the summary as one JSON object (with --dry-run, and the records it would replay)")
	return a.bind(cmd, c)
}

func (c *replayCommand) setArgs(args []string) { c.args = args }

func (c *replayCommand) validate() error {
	var err error
	if c.opts.Rate, err = parseRate(c.rate); err != nil {
		return &usageError{err}
	}
	switch {
	case c.opts.Limit < 0:
		return usagef("--limit %d: want 0 (all) or more", c.opts.Limit)
	case c.opts.MaxReplays < 0:
		return usagef("--max-replays %d: want 0 (no cap) or more", c.opts.MaxReplays)
	}
	c.opts.TaskPrefix = c.names.TaskPrefix
	if err := c.opts.Validate(); err != nil { // --to
		return &usageError{err}
	}
	if c.filter, err = c.filters.filter(time.Now()); err != nil {
		return err
	}
	c.filter.Seqs, err = parseSeqs(c.args)
	return err
}

// parseRate reads "100", "100/s", "600/m" or "3600/h" as records per second.
func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	per := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}[unit]
	if err != nil || !(n > 0) || n > 1e9 || per == 0 {
		return 0, fmt.Errorf("--rate %q: want N/s, N/m or N/h, e.g. 50/s", clip(s, 64))
	}
	return n / per, nil
}

func (c *replayCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		if err := checkSeqs(ctx, st, c.names.DLQStream, c.filter.Seqs, "replayed"); err != nil {
			return err
		}
		if c.opts.DryRun {
			return c.dryRun(ctx, st)
		}
		return c.replay(ctx, st)
	})
}

// replayJSON is replay's JSON form: the summary, and for a dry run the
// records it would replay.
type replayJSON struct {
	DryRun bool `json:"dry_run"`
	dlq.ReplaySummary
	Records *[]listItem `json:"records,omitempty"` // a dry run's
}

func summaryJSON(sum dlq.ReplaySummary, dryRun bool) replayJSON {
	if sum.Errors == nil {
		sum.Errors = []string{} // always a list
	}
	return replayJSON{DryRun: dryRun, ReplaySummary: sum}
}

// maxErrorLine caps a replay's explanation of one refused or failed
// record: it quotes fields of the record, which may be megabytes.
const maxErrorLine = 512

// dryRun prints what the replay would do: the records it would replay,
// why it would refuse others, and the counts.
func (c *replayCommand) dryRun(ctx context.Context, st *dlq.Store) error {
	items := []listItem{}
	var refused []string
	o := c.opts
	o.OnRecord = func(en dlq.Entry, out dlq.Outcome, why error) {
		switch out {
		case dlq.OutcomeReplayed:
			items = append(items, item(dlq.Brief(en))) // held until printed: bounded
		case dlq.OutcomeRefused:
			refused = append(refused, why.Error())
		}
	}
	sum, err := st.Replay(ctx, c.filter, o)
	if err != nil {
		return err
	}
	if c.asJSON {
		out := summaryJSON(sum, true)
		out.Records = &items
		return writeJSON(c.stdout, out)
	}
	if len(items) > 0 {
		printItems(c.stdout, items)
		fmt.Fprintln(c.stdout)
	}
	for _, r := range refused {
		fmt.Fprintln(c.stdout, cell(r, maxErrorLine))
	}
	fmt.Fprintf(c.stdout, "dry run: would replay %s, skip %d, refuse %d; nothing was changed\n", plural(sum.Replayed, "record"), sum.Skipped, sum.Refused)
	return nil
}

func (c *replayCommand) replay(ctx context.Context, st *dlq.Store) error {
	o := c.opts
	var bar *progressbar.ProgressBar
	if !c.quiet && isTerminal(c.stderr) {
		total, err := st.Count(ctx, c.filter)
		if err != nil {
			return err
		}
		if o.Limit > 0 {
			total = min(total, o.Limit)
		}
		bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(c.stderr), progressbar.OptionSetDescription("replaying"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("records"),
			progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		o.Progress = func(s dlq.ReplaySummary) { _ = bar.Set(s.Selected) }
	}
	start := time.Now()
	sum, err := st.Replay(ctx, c.filter, o)
	if bar != nil {
		_ = bar.Finish()
	}
	took := time.Since(start)
	if c.asJSON {
		if jerr := writeJSON(c.stdout, summaryJSON(sum, false)); jerr != nil && err == nil {
			err = jerr
		}
	} else {
		fmt.Fprintf(c.stdout, "replayed %d, already replayed %d, skipped %d, refused %d, failed %d in %v (%.0f records/s)\n",
			sum.Replayed, sum.Duplicates, sum.Skipped, sum.Refused, sum.Failed, took.Round(time.Millisecond), float64(sum.Replayed+sum.Duplicates)/max(took.Seconds(), 1e-9))
		if sum.Skipped > 0 {
			fmt.Fprintf(c.stdout, "skipped records stay in the dead-letter queue: replayed %d times already (--max-replays) or unreadable; --force replays the former\n", o.MaxReplays)
		}
		if sum.Refused > 0 {
			fmt.Fprintln(c.stdout, "refused records stay in the dead-letter queue; why is on stderr")
		}
		for _, msg := range sum.Errors {
			fmt.Fprintln(c.stderr, cell(msg, maxErrorLine))
		}
	}
	if err != nil {
		return fmt.Errorf("replay stopped: %w (run it again to continue; nothing is lost or duplicated)", err)
	}
	if n := sum.Failed + sum.Refused; n > 0 {
		return fmt.Errorf("%s could not be replayed and stay in the dead-letter queue", plural(n, "record"))
	}
	return nil
}
