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
	asJSON  bool
	args    []string

	filter *dlq.Filter // by validate
}

func purgeCmd(a *app, ff *filterFlags) *cobra.Command {
	c := &purgeCommand{app: a, filters: ff}
	cmd := &cobra.Command{
		Use:   "purge [SEQ...]",
		Short: "Delete the selected records (asks first unless --yes)",
		Long: `Delete the records the filters select, or the records SEQ... (from dlq list), or those of
them the filters select. It asks first, on stderr, unless --yes. If any SEQ has no record,
nothing is deleted and the command exits 1. With no filter and no SEQ it empties the
dead-letter queue.`,
		Example: `  producer dlq purge --reason unknown_node_type
  producer dlq purge --group 3f2a9c81d0e4 --yes
  producer dlq purge 2                       # one record, by its sequence
  producer dlq purge --until 7d --yes --json`,
		Args: cobra.ArbitraryArgs,
	}
	cmd.Flags().BoolVarP(&c.yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&c.asJSON, "json", false, `print {"purged":N} (needs --yes)`)
	return a.bind(cmd, c)
}

func (c *purgeCommand) setArgs(args []string) { c.args = args }

func (c *purgeCommand) validate() error {
	if c.asJSON && !c.yes {
		return usagef("--json needs --yes: a purge for a script cannot ask")
	}
	f, err := c.filters.filter(time.Now())
	if err != nil {
		return err
	}
	if f.Seqs, err = parseSeqs(c.args); err != nil {
		return err
	}
	c.filter = f
	return nil
}

func (c *purgeCommand) run(ctx context.Context) error {
	return c.withStore(func(st *dlq.Store) error {
		if err := checkSeqs(ctx, st, c.names.DLQStream, c.filter.Seqs, "deleted"); err != nil {
			return err
		}
		if !c.yes {
			// The answer covers the records counted: none stored while
			// the question waits is deleted with them.
			whole := c.filter.IsZero()
			last, _, err := st.Snapshot(ctx)
			if err != nil {
				return err
			}
			if c.filter.BeforeSeq == 0 || c.filter.BeforeSeq > last+1 {
				c.filter.BeforeSeq = last + 1
			}
			n, err := st.Count(ctx, c.filter)
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintln(c.stdout, "no matching records")
				return nil
			}
			what := plural(n, "matching record")
			if whole {
				what = plural(n, "record") + " (the whole dead-letter queue)"
			}
			fmt.Fprintf(c.stderr, "Delete %s? This cannot be undone. [y/N] ", what)
			answer, _ := bufio.NewReader(c.stdin).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
				return errors.New("purge cancelled; nothing was deleted")
			}
		}
		n, err := st.Purge(ctx, c.filter)
		if c.asJSON {
			if jerr := writeJSON(c.stdout, map[string]int{"purged": n}); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			fmt.Fprintf(c.stdout, "purged %s\n", plural(n, "record"))
		}
		return err
	})
}
