package main

import (
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

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// showCommand prints one record in full.
type showCommand struct {
	*app
	arg    string
	asJSON bool

	seq uint64 // from arg, by validate
}

func showCmd(a *app) *cobra.Command {
	c := &showCommand{app: a}
	cmd := &cobra.Command{
		Use:     "show SEQ",
		Short:   "Show one record in full: context, stack trace, headers, payload",
		Example: "  producer dlq show 1\n  producer dlq show 1 --json",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("want one SEQ, a record sequence number from list")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&c.asJSON, "json", false, "print as JSON")
	return a.bind(cmd, c)
}

func (c *showCommand) setArgs(args []string) { c.arg = args[0] }

func (c *showCommand) validate() error {
	seq, err := strconv.ParseUint(c.arg, 10, 64)
	if err != nil || seq == 0 {
		return usagef("SEQ %q: want a record sequence number from list", c.arg)
	}
	c.seq = seq
	return nil
}

func (c *showCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		en, err := st.Get(ctx, c.seq)
		if err != nil {
			return err
		}
		if en.Err != nil {
			return fmt.Errorf("record %d is not a nodeq dead-letter record: %w", c.seq, en.Err)
		}
		if c.asJSON {
			return writeJSON(c.stdout, dlq.Describe(en))
		}
		printRecord(c.stdout, en)
		return nil
	})
}

// printRecord prints a record for a terminal: every text that comes from
// the record is passed through clean (or cleanText, cleanJSON).
func printRecord(w io.Writer, en *dlq.Entry) {
	r := en.Record
	d := dlq.Describe(en)
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
	if r.TraceID != "" {
		row("trace id", r.TraceID) // the consumer traces: its spans of the task
	}
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
