package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
)

// breakerCmd groups the operator's commands to the consumers' circuit
// breakers: open by hand, close (reset).
func breakerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "breaker",
		Short: "Open the consumers' circuit breaker by hand (maintenance) or close (reset) it",
		Long: `Command the circuit breaker of every consumer process of the durable consumer, or of one
(--process, an ID from producer status). The command is stored in the Key-Value bucket
nodeq_control; the consumers act on it within a second and log it, with --by and --reason.

open keeps the breaker open for --for (at most 24h): no task starts and no probe runs until
then, prefetched tasks go back to the stream; then it probes one task and closes on its
success. close resets it at once, ending a manual open or a cooldown. With breaker.scope
fleet, a command for every process also opens or closes the fleet's shared breaker and
pauses or resumes the consumer on the server. A process that starts while an open is in
force stays out too.`,
		Example: `  producer breaker open --for 30m --reason 'database maintenance'
  producer breaker close --reason 'downstream fixed'
  producer breaker open --for 10m --process ip-10-0-0-7/4242`,
	}
	asGroup(cmd)
	cmd.AddCommand(breakerOpenCmd(a), breakerCloseCmd(a))
	return cmd
}

// breakerFlags are the flags both breaker commands take.
type breakerFlags struct {
	process optionalString
	reason  string
	by      string
}

func (f *breakerFlags) register(cmd *cobra.Command, getenv func(string) string) {
	fl := cmd.Flags()
	fl.Var(&f.process, "process", "only this consumer process (an ID from producer status); default every process")
	fl.StringVar(&f.reason, "reason", "", "why, for the consumers' log")
	fl.StringVar(&f.by, "by", defaultBy(getenv), "who asks, for the consumers' log")
}

// defaultBy is $USER@hostname.
func defaultBy(getenv func(string) string) string {
	user := getenv("USER")
	if user == "" {
		user = getenv("LOGNAME")
	}
	if user == "" {
		user = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return user + "@" + host
}

// check validates the flags as usage errors.
func (f *breakerFlags) check() error {
	if f.process.set {
		if err := fleet.CheckProcessID(f.process.value); err != nil {
			return usagef("--process: %w (see producer status for the IDs)", err)
		}
	}
	if f.by == "" {
		return usagef("--by is empty: say who asks")
	}
	if err := fleet.CheckText("--by", f.by, fleet.MaxBy); err != nil {
		return usagef("%w", err)
	}
	if err := fleet.CheckText("--reason", f.reason, fleet.MaxReason); err != nil {
		return usagef("%w", err)
	}
	return nil
}

// send stores cmd and prints what was written; d is how long an open was asked for.
func (f *breakerFlags) send(ctx context.Context, a *app, cmd fleet.Command, d time.Duration) error {
	return a.withJS(func(js jetstream.JetStream) error {
		sent, key, err := fleet.SendCommand(ctx, js, a.names, f.process.value, cmd)
		if err != nil {
			return err
		}
		printCommand(a.stdout, a.names, f.process.value, sent, key, d)
		return nil
	})
}

// printCommand says what was written, and what the consumers do with it.
func printCommand(w io.Writer, n queue.Names, process string, c fleet.Command, key string, d time.Duration) {
	target := "every process of " + n.Consumer
	if process != "" {
		target = "process " + clean(process) + " of " + n.Consumer
	}
	what, logged := "closed", "circuit breaker closed by operator"
	if c.Op == fleet.OpOpen {
		what = fmt.Sprintf("open until %s (%v)", c.Until.Format(time.RFC3339), d)
		logged = "circuit breaker opened by operator"
	}
	fmt.Fprintf(w, "circuit breaker of %s on %s: %s, by %s", target, n.TaskStream, what, clean(c.By))
	if c.Reason != "" {
		fmt.Fprintf(w, " (%s)", clean(c.Reason))
	}
	fmt.Fprintf(w, "\ncommand %s stored in %s as %s: the consumers act on it within a second and log %q\n", c.ID, fleet.ControlBucket, key, logged)
}

// breakerOpenCommand opens the breaker by hand.
type breakerOpenCommand struct {
	*app
	flags   breakerFlags
	forText string
	d       time.Duration // from forText, by validate
	cmd     fleet.Command // by validate
}

func breakerOpenCmd(a *app) *cobra.Command {
	c := &breakerOpenCommand{app: a}
	cmd := &cobra.Command{
		Use:   "open --for DURATION",
		Short: "Open the breaker by hand for a while (at most 24h): nothing runs, nothing probes until then",
		Example: `  producer breaker open --for 30m --reason 'database maintenance'
  producer breaker open --for 2h --process ip-10-0-0-7/4242`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&c.forText, "for", "", "how long (e.g. 30m), from 1s to 24h; required")
	c.flags.register(cmd, a.getenv)
	return a.bind(cmd, c)
}

// Bounds on --for.
const (
	minManualOpen = time.Second
	maxManualOpen = fleet.MaxManualOpen
)

func (c *breakerOpenCommand) validate() error {
	if c.forText == "" {
		return usagef("--for is required: how long the breaker stays open (e.g. 30m, at most %v)", maxManualOpen)
	}
	d, err := time.ParseDuration(c.forText)
	if err != nil || d < minManualOpen || d > maxManualOpen {
		return usagef("--for %q: want a duration from %v to %v (a manual open is bounded; end it sooner with producer breaker close)", c.forText, minManualOpen, maxManualOpen)
	}
	if err := c.flags.check(); err != nil {
		return err
	}
	now := time.Now()
	c.d = d
	c.cmd = fleet.Command{Op: fleet.OpOpen, Until: now.Add(d), By: c.flags.by, Reason: c.flags.reason}
	if err := c.cmd.Check(now); err != nil {
		return usagef("%w", err)
	}
	return nil
}

func (c *breakerOpenCommand) run(ctx context.Context) error {
	return c.flags.send(ctx, c.app, c.cmd, c.d)
}

// breakerCloseCommand closes (resets) the breaker.
type breakerCloseCommand struct {
	*app
	flags breakerFlags
	cmd   fleet.Command // by validate
}

func breakerCloseCmd(a *app) *cobra.Command {
	c := &breakerCloseCommand{app: a}
	cmd := &cobra.Command{
		Use:     "close",
		Aliases: []string{"reset"},
		Short:   "Close (reset) the breaker at once, ending a manual open or a cooldown",
		Example: `  producer breaker close --reason 'downstream fixed'
  producer breaker reset --process ip-10-0-0-7/4242`,
		Args: cobra.NoArgs,
	}
	c.flags.register(cmd, a.getenv)
	return a.bind(cmd, c)
}

func (c *breakerCloseCommand) validate() error {
	if err := c.flags.check(); err != nil {
		return err
	}
	c.cmd = fleet.Command{Op: fleet.OpClose, By: c.flags.by, Reason: c.flags.reason}
	if err := c.cmd.Check(time.Now()); err != nil {
		return usagef("%w", err)
	}
	return nil
}

func (c *breakerCloseCommand) run(ctx context.Context) error {
	return c.flags.send(ctx, c.app, c.cmd, 0)
}

// optionalString is a string flag that tells whether it was given, so
// that an empty value is an error rather than the default.
type optionalString struct {
	value string
	set   bool
}

func (o *optionalString) String() string { return o.value }
func (o *optionalString) Type() string   { return "string" }
func (o *optionalString) Set(v string) error {
	o.value, o.set = v, true
	return nil
}
