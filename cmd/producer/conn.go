package main

import (
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
)

// connFlags are the connection and naming flags every command shares.
type connFlags struct {
	url        string
	taskPrefix string
	auth       *config.AuthFlags
	getenv     func(string) string
}

func (c *connFlags) register(cmd *cobra.Command, getenv func(string) string) {
	def := getenv("NATS_URL")
	if def == "" {
		def = nats.DefaultURL
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.url, "nats-url", def, "NATS server URL(s), comma-separated; env NATS_URL")
	pf.StringVar(&c.taskPrefix, "task-prefix", queue.DefaultNames().TaskPrefix, "subject prefix of tasks (names.task_prefix)")
	c.auth = config.BindAuthFlags(pf)
	c.getenv = getenv
}

func (c *connFlags) names() queue.Names {
	n, _ := queue.Names{TaskPrefix: c.taskPrefix}.Resolve() // the operator CLI resolves and checks its name flags
	return n
}

// connect dials NATS and returns the connection and a JetStream handle
// made with jsOpts.
func (c *connFlags) connect(log *slog.Logger, jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	// Credentials come from the same NODEQ_NATS_* variables as the consumer's, then flags.
	env := config.Default()
	if err := env.ApplyEnv(c.getenv); err != nil {
		return nil, nil, err
	}
	authOpts, err := c.auth.Overlay(env.Auth()).Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsconn.Connect(c.url, "nodeq-producer", log, append(authOpts, nats.MaxReconnects(3))...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// withJS connects, runs fn, and closes the connection.
func (c *connFlags) withJS(e *env, fn func(js jetstream.JetStream) error) error {
	nc, js, err := c.connect(quietLog(e))
	if err != nil {
		return err
	}
	defer nc.Close()
	return fn(js)
}
