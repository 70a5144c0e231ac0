package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// listCommand prints a page of records.
type listCommand struct {
	*app
	filters       *filterFlags
	page          dlq.PageOptions
	before, after uint64
	asJSON        bool

	filter *dlq.Filter // by validate
}

func listCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &listCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List records, newest first, a page at a time",
		Example: `  producer dlq list --node-type resize --since 2h
  producer dlq list --kind Transport --match timeout --json
  producer dlq list --group 3f2a9c81d0e4     # one failure group, from dlq stats
  producer dlq list --before-seq 4812        # the next (older) page`,
		Args: cobra.NoArgs,
	}
	fl := cmd.Flags()
	fl.IntVarP(&c.page.Limit, "limit", "n", dlq.DefaultPageSize, fmt.Sprintf("records per page (at most %d)", dlq.MaxPageSize))
	fl.BoolVar(&c.page.Oldest, "oldest", false, "oldest first")
	fl.Uint64Var(&c.before, "before-seq", 0, "only records with a lower sequence (next page, newest first)")
	fl.Uint64Var(&c.after, "after-seq", 0, "only records with a higher sequence (next page, oldest first)")
	fl.BoolVar(&c.asJSON, "json", false, "one JSON object per line")
	return a.bind(cmd, c)
}

func (c *listCommand) validate() error {
	if c.page.Limit < 1 || c.page.Limit > dlq.MaxPageSize {
		return usagef("--limit %d: want 1 to %d records per page", c.page.Limit, dlq.MaxPageSize)
	}
	if c.before > 0 && c.after+1 >= c.before {
		return usagef("--after-seq %d and --before-seq %d: no sequence lies between them", c.after, c.before)
	}
	f, err := c.filters.filter(time.Now())
	if err != nil {
		return err
	}
	f.BeforeSeq, f.AfterSeq = c.before, c.after
	c.filter = f
	return nil
}

func (c *listCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		p, err := st.List(ctx, c.filter, c.page)
		if err != nil {
			return err
		}
		items := make([]listItem, len(p.Entries))
		for i, en := range p.Entries {
			items[i] = item(en)
		}
		if c.asJSON {
			for _, it := range items {
				if err := writeJSON(c.stdout, it); err != nil {
					return err
				}
			}
			return nil
		}
		if len(items) == 0 {
			fmt.Fprintln(c.stdout, "no matching records")
			return nil
		}
		printItems(c.stdout, items)
		switch {
		case c.page.Oldest && p.Next != 0:
			fmt.Fprintf(c.stdout, "\n%s, oldest first; next page: --oldest --after-seq %d\n", plural(len(items), "record"), p.Next)
		case c.page.Oldest:
			fmt.Fprintf(c.stdout, "\n%s, oldest first\n", plural(len(items), "record"))
		case p.Next != 0:
			fmt.Fprintf(c.stdout, "\n%d of %s, newest first; next page: --before-seq %d\n", len(items), plural(p.Matched, "matching record"), p.Next)
		default:
			fmt.Fprintf(c.stdout, "\n%s, newest first\n", plural(p.Matched, "matching record"))
		}
		return nil
	})
}
