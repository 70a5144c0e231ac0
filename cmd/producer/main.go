// Command producer is nodeq's operator tool: it publishes tasks and waits
// for their results, shows, pauses and resumes the fleet of consumers, and
// inspects, replays and purges the dead-letter queue.
//
// Each command is a type (publishCommand, replayCommand, ...) whose fields
// hold its options, with validate, which checks them all before anything
// connects and returns a *usageError, and run. Its cobra.Command only binds
// flags and arguments to those fields (see app.bind in command.go). To add a
// command, write such a type and add its constructor to newRoot.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/version"
)

// Exit codes, documented in docs/operations.md.
const (
	exitOK       = 0
	exitFailed   = 1 // a publish, a task, a replay or a connection failed
	exitUsage    = 2 // bad flags, arguments or names
	exitNoResult = 3 // publish --wait timed out: no result yet; the task is still queued or running
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run is the whole program; main adds only signals and the exit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRoot(&app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "producer:", err)
	return exitCode(err)
}

// exitCode is the exit status for the error a command ended with.
func exitCode(err error) int {
	var usage *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.Is(err, errNoResult):
		return exitNoResult
	}
	return exitFailed
}

// newRoot builds the command tree around the state every command shares.
func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "producer",
		Short: "nodeq's operator tool: publish tasks, watch the fleet, inspect and replay the dead-letter queue",
		Long: `producer is nodeq's operator tool. It publishes tasks (one, or many from a JSON Lines
file) and waits for their results; shows the fleet's status, pauses and resumes it;
and inspects, replays and purges the dead-letter queue.

Every command connects as natscli does: to -s/--server (alias --nats-url; env NATS_URL),
with the settings of, first to last, the flags (--creds, --nats-*, --tls-*), the
NODEQ_NATS_* variables, the NATS_* variables (NATS_USER, NATS_PASSWORD, NATS_TOKEN,
NATS_CREDS, NATS_NKEY) and a natscli context (--context NAME, env NATS_CONTEXT, else
the one "nats context select" chose; --no-context for none). It finds nodeq's streams
and consumer by the name flags --task-stream, --task-prefix, --dlq-stream, --dlq-prefix
and --consumer (the names.* settings of the consumers; the defaults are theirs).

Exit status: 0 done; 1 a publish, a task, a replay or the connection failed;
2 bad flags, arguments or names; 3 publish --wait timed out: no result yet, the
task is still queued or running. See docs/operations.md.`,
		Example: `  producer publish echo '{"text":"hi"}' --wait
  producer status
  producer pause --until 30m
  producer resume
  producer dlq stats
  producer dlq replay --kind Transport --dry-run`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	asGroup(root)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	a.conn.register(pf, a.getenv)
	a.nameFlags.register(pf)
	root.AddCommand(publishCmd(a), statusCmd(a), pauseCmd(a), resumeCmd(a), dlqCmd(a))
	root.AddCommand(breakerCmd(a), uiCmd(a))
	return root
}
