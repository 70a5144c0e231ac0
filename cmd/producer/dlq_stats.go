package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// statsCommand counts records by failure group.
type statsCommand struct {
	*app
	filters *filterFlags
	asJSON  bool

	filter *dlq.Filter // by validate
}

func statsCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &statsCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count records by failure group: node type, reason, error kind and message",
		Long: `Count the selected records by failure group: records of one node type that failed for
one reason, with one error kind and one error message once its numbers, IDs, UUIDs,
addresses and URLs are masked (the FINGERPRINT column). Largest group first. The GROUP
column is the group's ID: --group ID selects its records in every dlq command.`,
		Example: `  producer dlq stats
  producer dlq stats --node-type resize --reason retries_exhausted
  producer dlq stats --since 1h --json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&c.asJSON, "json", false, `print as JSON: {"total":N,"groups":[...]}`)
	return a.bind(cmd, c)
}

func (c *statsCommand) validate() error {
	f, err := c.filters.filter(time.Now())
	c.filter = f
	return err
}

// statsJSON is stats' JSON form.
type statsJSON struct {
	Total  int          `json:"total"`
	Groups []*dlq.Group `json:"groups"`
}

func (c *statsCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		groups, total, err := st.Stats(ctx, c.filter)
		if err != nil {
			return err
		}
		if c.asJSON {
			if groups == nil {
				groups = []*dlq.Group{}
			}
			return writeJSON(c.stdout, statsJSON{Total: total, Groups: groups})
		}
		if total == 0 {
			fmt.Fprintln(c.stdout, "no matching records")
			return nil
		}
		printGroups(c.stdout, groups[:min(len(groups), maxGroupRows)])
		if more := len(groups) - maxGroupRows; more > 0 {
			fmt.Fprintf(c.stdout, "... and %s not listed, none larger (--json lists every group)\n", plural(more, "group"))
		}
		fmt.Fprintf(c.stdout, "\n%s in %s; a group's records: dlq list --group %s\n", plural(total, "record"), plural(len(groups), "group"), groups[0].ID)
		return nil
	})
}

// maxGroupRows caps the groups the table lists, largest first.
const maxGroupRows = 100

// maxDistinct is how many different messages dlq.Stats tells apart in a
// group; a group with that many may have more.
const maxDistinct = 1000

// printGroups prints the table of groups. The keys come from records that
// anyone able to publish on the dead-letter subjects may have written:
// every cell is cleaned and cut.
func printGroups(w io.Writer, groups []*dlq.Group) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tNODE TYPE\tREASON\tKIND\tCOUNT\tFIRST (UTC)\tLAST (UTC)\tMESSAGES\tFINGERPRINT")
	for _, g := range groups {
		distinct := strconv.Itoa(g.Distinct)
		if g.Distinct >= maxDistinct {
			distinct += "+"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", g.ID, cell(g.NodeType, 64), cell(g.Reason, 24), cell(g.ErrorKind, 16), g.Count,
			g.First.UTC().Format("2006-01-02 15:04:05"), g.Last.UTC().Format("2006-01-02 15:04:05"), distinct, cell(fold(g.Fingerprint), 60))
	}
	tw.Flush()
}
