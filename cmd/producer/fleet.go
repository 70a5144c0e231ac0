package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
)

// fleetFlags name the shared consumer that pause, resume and status act on.
type fleetFlags struct {
	stream, consumer, dlqStream string
}

func (f *fleetFlags) register(cmd *cobra.Command) {
	d := queue.DefaultNames()
	cmd.Flags().StringVar(&f.stream, "task-stream", d.TaskStream, "task stream (names.task_stream)")
	cmd.Flags().StringVar(&f.consumer, "consumer", d.Consumer, "durable consumer shared by the fleet (names.consumer)")
	cmd.Flags().StringVar(&f.dlqStream, "dlq-stream", d.DLQStream, "dead-letter stream (names.dlq_stream)")
}

func (f *fleetFlags) names(conn *connFlags) queue.Names {
	n := conn.names()
	n.TaskStream, n.Consumer, n.DLQStream = f.stream, f.consumer, f.dlqStream
	return n
}

func quietLog(e *env) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func pauseCmd(ctx context.Context, e *env, conn *connFlags) *cobra.Command {
	var ff fleetFlags
	var until string
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "Stop every consumer of the fleet from pulling tasks (until resume or --until)",
		Long: `Pause the shared durable consumer on the server: every consumer process stops receiving
tasks, in-flight tasks finish, new tasks wait in the stream. The pause survives restarts
of consumers and servers. With --until the server resumes by itself at that time.`,
		Example: `  producer pause --until 30m     # a maintenance window
  producer pause                 # until producer resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			end := time.Now().Add(fleet.Forever)
			if until != "" {
				d, err := time.ParseDuration(until)
				switch {
				case err == nil && d > 0:
					end = time.Now().Add(d)
				default:
					t, terr := time.Parse(time.RFC3339, until)
					if terr != nil || !t.After(time.Now()) {
						return usageError{fmt.Errorf("--until %q: want a duration (30m) or a future RFC 3339 time", until)}
					}
					end = t
				}
			}
			return conn.withJS(e, func(js jetstream.JetStream) error {
				if err := fleet.Pause(ctx, js, ff.names(conn), end); err != nil {
					return err
				}
				if until == "" {
					fmt.Fprintf(e.stdout, "paused %s until resumed\n", ff.consumer)
				} else {
					fmt.Fprintf(e.stdout, "paused %s until %s\n", ff.consumer, end.UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&until, "until", "", "resume by itself after this duration (30m) or at this RFC 3339 time")
	ff.register(cmd)
	return cmd
}

func resumeCmd(ctx context.Context, e *env, conn *connFlags) *cobra.Command {
	var ff fleetFlags
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Resume a paused fleet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return conn.withJS(e, func(js jetstream.JetStream) error {
				if err := fleet.Resume(ctx, js, ff.names(conn)); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "resumed %s\n", ff.consumer)
				return nil
			})
		},
	}
	ff.register(cmd)
	return cmd
}

func statusCmd(ctx context.Context, e *env, conn *connFlags) *cobra.Command {
	var ff fleetFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show pending, in-flight, paused and dead-lettered counts of the shared consumer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return conn.withJS(e, func(js jetstream.JetStream) error {
				st, err := fleet.GetStatus(ctx, js, ff.names(conn))
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(st)
				}
				paused := "no"
				if st.Paused {
					paused = "until " + st.PausedUntil.Format(time.RFC3339)
					if time.Until(st.PausedUntil) > fleet.Forever/2 {
						paused = "until resumed"
					}
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
				tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
				for _, row := range [][2]any{
					{"consumer", st.Consumer + " on " + st.Stream}, {"pending", st.Pending}, {"in flight", st.InFlight},
					{"redelivered in flight", st.Redelivered}, {"waiting pull requests", st.Waiting}, {"paused", paused},
					{"dead letters", deadLetters}, {"dead-letter store", store}, {"circuit breaker", breaker},
				} {
					fmt.Fprintf(tw, "%s\t%v\n", row[0], row[1])
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	ff.register(cmd)
	return cmd
}
