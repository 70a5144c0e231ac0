package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/queue"
)

// command is one producer command: a type whose fields its cobra.Command
// binds to flags and arguments.
type command interface {
	// validate checks every option and argument, and derives what run
	// needs from them, before anything connects. Its errors are
	// *usageError (exit 2).
	validate() error
	// run does the work.
	run(ctx context.Context) error
}

// argsTaker is a command that takes positional arguments; bind hands them
// over before validate.
type argsTaker interface {
	setArgs(args []string)
}

// app is what every command shares: the process's streams and environment,
// the connection flags, and the names, resolved once from the name flags
// before a command validates.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	conn      connFlags
	nameFlags nameFlags
	names     queue.Names
}

// bind makes cmd run c: the names are resolved, the arguments handed over,
// c validated and run. It is all the glue between cobra and a command.
func (a *app) bind(cmd *cobra.Command, c command) *cobra.Command {
	if cmd.Args != nil {
		cmd.Args = positional(cmd.Args)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		names, err := a.nameFlags.resolve()
		if err != nil {
			return err
		}
		a.names = names
		if t, ok := c.(argsTaker); ok {
			t.setArgs(args)
		}
		if err := c.validate(); err != nil {
			return err
		}
		return c.run(cmd.Context())
	}
	return cmd
}

// log is the logger of the libraries a command calls: warnings and errors
// only, on stderr.
func (a *app) log() *slog.Logger {
	return slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
