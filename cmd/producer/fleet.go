package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/fleet"
)

// pauseCommand pauses the shared durable consumer.
type pauseCommand struct {
	*app
	until string
	end   time.Time // from until, by validate
}

func pauseCmd(a *app) *cobra.Command {
	c := &pauseCommand{app: a}
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "Stop every consumer of the fleet from pulling tasks (until resume or --until)",
		Long: `Pause the shared durable consumer on the server: every consumer process stops receiving
tasks, in-flight tasks finish, new tasks wait in the stream. The pause survives restarts
of consumers and servers. With --until the server resumes by itself at that time.`,
		Example: `  producer pause --until 30m     # a maintenance window
  producer pause                 # until producer resume`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&c.until, "until", "", "resume by itself after this duration (30m) or at this RFC 3339 time")
	return a.bind(cmd, c)
}

func (c *pauseCommand) validate() error {
	now := time.Now()
	if c.until == "" {
		c.end = now.Add(fleet.Forever)
		return nil
	}
	if d, err := time.ParseDuration(c.until); err == nil && d > 0 {
		c.end = now.Add(d)
		return nil
	}
	t, err := time.Parse(time.RFC3339, c.until)
	if err != nil || !t.After(now) {
		return usagef("--until %q: want a duration (30m) or a future RFC 3339 time", c.until)
	}
	c.end = t
	return nil
}

func (c *pauseCommand) run(ctx context.Context) error {
	return c.withJS(func(js jetstream.JetStream) error {
		if err := fleet.Pause(ctx, js, c.names, c.end); err != nil {
			return err
		}
		if c.until == "" {
			fmt.Fprintf(c.stdout, "paused %s until resumed\n", c.names.Consumer)
		} else {
			fmt.Fprintf(c.stdout, "paused %s until %s\n", c.names.Consumer, c.end.UTC().Format(time.RFC3339))
		}
		return nil
	})
}

// resumeCommand resumes the shared durable consumer.
type resumeCommand struct{ *app }

func resumeCmd(a *app) *cobra.Command {
	return a.bind(&cobra.Command{
		Use:   "resume",
		Short: "Resume a paused fleet",
		Args:  cobra.NoArgs,
	}, &resumeCommand{a})
}

func (c *resumeCommand) validate() error { return nil }

func (c *resumeCommand) run(ctx context.Context) error {
	return c.withJS(func(js jetstream.JetStream) error {
		if err := fleet.Resume(ctx, js, c.names); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "resumed %s\n", c.names.Consumer)
		return nil
	})
}

// statusCommand shows the shared consumer's state.
type statusCommand struct {
	*app
	asJSON bool
}

func statusCmd(a *app) *cobra.Command {
	c := &statusCommand{app: a}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show pending, in-flight, paused and dead-lettered counts of the shared consumer, and its live processes",
		Long: `Show the shared durable consumer's counts (pending, in flight, paused, dead letters, the
fleet breaker) and every live consumer process that pulls from it: ID, version, node types,
workers, tasks in flight, prefetched and held, breaker state and since when, paused, and when
it last refreshed its entry. Each process announces itself in the Key-Value bucket
nodeq_processes every few seconds and removes its entry when it stops; a process that died
drops out when its entry expires (the bucket's TTL, 30s by default).`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&c.asJSON, "json", false, "print as JSON")
	return a.bind(cmd, c)
}

func (c *statusCommand) validate() error { return nil }

func (c *statusCommand) run(ctx context.Context) error {
	return c.withJS(func(js jetstream.JetStream) error {
		st, err := fleet.GetStatus(ctx, js, c.names)
		if err != nil {
			return err
		}
		if c.asJSON {
			return writeJSON(c.stdout, st) // text from shared buckets: cleanJSON
		}
		return printStatus(c.stdout, st, time.Now())
	})
}

// printStatus prints st for a terminal, ages as of now: text from the
// shared buckets is cut and cleaned.
func printStatus(w io.Writer, st *fleet.Status, now time.Time) error {
	paused := "no"
	switch {
	case st.Paused && st.PausedIndefinitely:
		paused = "until resumed"
	case st.Paused:
		paused = "until " + st.PausedUntil.UTC().Format(time.RFC3339)
	}
	breaker := "per process (see the nodeq_breaker_state metric of each consumer)"
	if st.Breaker != "" {
		breaker = "fleet: " + st.Breaker
		if st.Breaker == "open" {
			breaker += " until " + st.BreakerUntil.UTC().Format(time.RFC3339)
		}
		breaker += " (last change by " + clean(clip(st.BreakerBy, 64)) + ")" // free text in a shared bucket
	}
	deadLetters := fmt.Sprint(st.DeadLetters)
	if st.DLQFull {
		deadLetters += " (FULL: the stream refuses new records; see docs/operations.md, \"The dead-letter stream is full\")"
	}
	store := "ok"
	if st.DLQRefusingUnknown != "" {
		store = "unknown: " + clean(clip(st.DLQRefusingUnknown, 200))
	}
	if h := st.DLQRefusing; h.Tasks > 0 {
		store = fmt.Sprintf("REFUSING: %d failed task(s) held with their outcome by %d consumer(s) since %s; only the store is retried: %s",
			h.Tasks, h.Processes, h.Since.Format(time.RFC3339), clean(clip(h.Error, 200))) // text from a shared bucket
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range [][2]any{
		{"consumer", st.Consumer + " on " + st.Stream}, {"pending", st.Pending}, {"in flight", st.InFlight},
		{"redelivered in flight", st.Redelivered}, {"waiting pull requests", st.Waiting}, {"paused", paused},
		{"dead letters", deadLetters}, {"dead-letter store", store}, {"circuit breaker", breaker},
		{"processes", processesSummary(st)},
	} {
		fmt.Fprintf(tw, "%s\t%v\n", row[0], row[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Processes) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return printProcesses(w, st.Processes, now)
}
