// Package natstest starts real, embedded nats-servers with JetStream for
// tests: random ports, temporary store directories, shut down at cleanup.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// Server starts an embedded nats-server with JetStream on a random loopback
// port and a temporary store directory, stopped when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return ServerIn(t, t.TempDir())
}

// ServerIn is Server with a given store directory.
func ServerIn(t testing.TB, dir string) *server.Server {
	t.Helper()
	return ServerAt(t, dir, "127.0.0.1:0")
}

// ServerAt is Server with a given store directory and address, for tests
// that stop a server and start it again where clients expect it.
func ServerAt(t testing.TB, dir, listen string) *server.Server {
	t.Helper()
	s, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: listen, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s, closing the connection when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
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

// ServerWith starts a nats-server with JetStream (temporary store, random
// loopback port) after mod adjusts its options, e.g. to require
// authentication or TLS. It is shut down when the test ends.
func ServerWith(t testing.TB, mod func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	mod(opts)
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
