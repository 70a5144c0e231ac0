package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// statsCommand counts records by node type and error kind.
type statsCommand struct {
	*app
	filters *filterFlags
	asJSON  bool

	filter *dlq.Filter // by validate
}

func statsCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &statsCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:     "stats",
		Short:   "Count records by node type and error kind, with a sample message",
		Example: "  producer dlq stats\n  producer dlq stats --since 1h --json",
		Args:    cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&c.asJSON, "json", false, "print as JSON")
	return a.bind(cmd, c)
}

func (c *statsCommand) validate() error {
	f, err := c.filters.filter(time.Now())
	c.filter = f
	return err
}

func (c *statsCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		groups, total, err := st.Stats(ctx, c.filter)
		if err != nil {
			return err
		}
		if c.asJSON {
			return writeJSON(c.stdout, map[string]any{"total": total, "groups": groups})
		}
		if total == 0 {
			fmt.Fprintln(c.stdout, "no matching records")
			return nil
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE TYPE\tKIND\tCOUNT\tFIRST (UTC)\tLAST (UTC)\tMESSAGES\tMOST COMMON MESSAGE")
		for _, g := range groups {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s (%d)\n", clean(clip(g.NodeType, 64)), clean(clip(g.ErrorKind, 16)), g.Count, g.First.UTC().Format("2006-01-02 15:04:05"),
				g.Last.UTC().Format("2006-01-02 15:04:05"), g.Distinct, clean(shorten(g.Sample, 60)), g.SampleN)
		}
		tw.Flush()
		fmt.Fprintf(c.stdout, "\n%d records in %d groups\n", total, len(groups))
		return nil
	})
}
