package main

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/natsconn"
)

// connFlags are the connection flags every command shares.
type connFlags struct {
	url  string
	auth *config.AuthFlags
}

func (c *connFlags) register(pf *pflag.FlagSet, getenv func(string) string) {
	def := getenv("NATS_URL")
	if def == "" {
		def = nats.DefaultURL
	}
	pf.StringVar(&c.url, "nats-url", def, "NATS server URL(s), comma-separated; env NATS_URL")
	c.auth = config.BindAuthFlags(pf)
}

// connect dials NATS and returns the connection and a JetStream handle
// made with jsOpts.
func (a *app) connect(jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	// Credentials come from the same NODEQ_NATS_* variables as the consumer's, then flags.
	env := config.Default()
	if err := env.ApplyEnv(a.getenv); err != nil {
		return nil, nil, err
	}
	authOpts, err := a.conn.auth.Overlay(env.Auth()).Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsconn.Connect(a.conn.url, "nodeq-producer", a.log(), append(authOpts, nats.MaxReconnects(3))...)
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
func (a *app) withJS(fn func(js jetstream.JetStream) error) error {
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	return fn(js)
}

// withStore connects and runs fn with the dead-letter store the names name.
func (a *app) withStore(fn func(st *dlq.Store) error) error {
	return a.withJS(func(js jetstream.JetStream) error {
		return fn(dlq.NewStore(js, a.names.DLQStream, a.names.DLQPrefix))
	})
}
