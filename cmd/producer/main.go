// Command producer publishes nodeq tasks and waits for their results.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/version"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a publish or a task failed, or a wait timed out
	exitUsage  = 2 // bad flags or arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env carries the process's streams and environment to the commands.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError marks errors in the user's arguments (exit 2).
type usageError struct{ error }

// run is the whole program; main adds only signals and the exit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	conn := &connFlags{}
	root := &cobra.Command{
		Use:           "producer",
		Short:         "Publish nodeq tasks and wait for their results",
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	conn.register(root, getenv)
	root.AddCommand(publishCmd(ctx, e, conn), dlqCmd(ctx, e, conn), pauseCmd(ctx, e, conn), resumeCmd(ctx, e, conn), statusCmd(ctx, e, conn))
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "producer:", err)
	if _, ok := err.(usageError); ok || isCobraUsage(err) {
		return exitUsage
	}
	return exitFailed
}
