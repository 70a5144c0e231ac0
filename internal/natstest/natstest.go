// Package natstest starts real, embedded nats-servers with JetStream for
// tests: random ports, temporary store directories, shut down at cleanup.
package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natsconn"
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
	s, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: listen, StoreDir: dir})
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

// Cluster starts an n-node JetStream cluster on loopback, each node with its
// own store directory, and waits until the cluster has a meta leader. Client
// ports are random; cluster ports are picked below the ephemeral range.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	base := 20000 + int(time.Now().UnixNano()%5000)*2
	routes := ""
	for i := range n {
		if i > 0 {
			routes += ","
		}
		routes += fmt.Sprintf("nats://127.0.0.1:%d", base+i)
	}
	var servers []*server.Server
	for i := range n {
		s := ServerWith(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "nodeq-test", Host: "127.0.0.1", Port: base + i}
			o.Routes = server.RoutesFromStr(routes)
		})
		servers = append(servers, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return servers
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster elected no JetStream meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URLs joins the client URLs of servers for a nats.Connect.
func URLs(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}
