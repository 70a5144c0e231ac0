package queue

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testServer starts an embedded JetStream server (natstest imports this
// package, so it cannot be used here).
func testServer(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testDurable starts a server with nodeq's streams and durable consumer,
// all with the default names and options.
func testDurable(t *testing.T) (*nats.Conn, jetstream.JetStream, Names, jetstream.Consumer) {
	t.Helper()
	nc, js := testServer(t)
	names := DefaultNames()
	if err := EnsureStreams(context.Background(), js, names, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := EnsureConsumer(context.Background(), js, names, ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, names, cons
}
