package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/dlq"
)

// purgeCommand deletes the selected records.
type purgeCommand struct {
	*app
	filters *filterFlags
	yes     bool

	filter *dlq.Filter // by validate
}

func purgeCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &purgeCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:     "purge",
		Short:   "Delete the selected records (asks first unless --yes)",
		Example: "  producer dlq purge --reason unknown_node_type\n  producer dlq purge --until 7d --yes",
		Args:    cobra.NoArgs,
	}
	cmd.Flags().BoolVarP(&c.yes, "yes", "y", false, "do not ask for confirmation")
	return a.bind(cmd, c)
}

func (c *purgeCommand) validate() error {
	f, err := c.filters.filter(time.Now())
	c.filter = f
	return err
}

func (c *purgeCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		if !c.yes {
			n, err := st.Count(ctx, c.filter)
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintln(c.stdout, "no matching records")
				return nil
			}
			what := "matching records"
			if c.filter.IsZero() {
				what = "records (the whole dead-letter queue)"
			}
			fmt.Fprintf(c.stderr, "Delete %d %s? This cannot be undone. [y/N] ", n, what)
			answer, _ := bufio.NewReader(c.stdin).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
				return errors.New("purge cancelled; nothing was deleted")
			}
		}
		n, err := st.Purge(ctx, c.filter)
		fmt.Fprintf(c.stdout, "purged %d records\n", n)
		return err
	})
}
