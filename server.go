package nodeq

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nodeq/nodeq/internal/natsconn"
)

// ServerOptions configure StartServer.
type ServerOptions struct {
	// Listen is the host:port clients connect to. Port 0 picks a free port
	// (read it with Server.URL). Default "127.0.0.1:4222", where
	// cmd/consumer's embedded server and cmd/producer's default URL are.
	// Only loopback addresses are allowed: the server asks clients for no
	// credentials.
	Listen string
	// StoreDir is where JetStream keeps the tasks and dead letters.
	// Required. The server locks it while it runs: a second server on the
	// same directory, in this or another process, is refused.
	StoreDir string
	// SyncAlways makes the server fsync every write before it
	// acknowledges it (slower; survives a power loss, not only a crash).
	SyncAlways bool
}

// Server is a nats-server with JetStream running in this process.
type Server struct {
	srv      *server.Server
	shutdown sync.Once
}

// StartServer starts a nats-server with JetStream in this process and
// returns once it accepts connections. Stop it with Shutdown.
func StartServer(o ServerOptions) (*Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("nodeq: StartServer: StoreDir is required: the directory where JetStream keeps tasks")
	}
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: o.Listen, StoreDir: o.StoreDir, SyncAlways: o.SyncAlways})
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	return &Server{srv: srv}, nil
}

// URL is the server's client URL, e.g. "nats://127.0.0.1:41234", for
// Config.NATS.URL.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Shutdown stops the server, waits until it has stopped and releases its
// store directory. Tasks stored stay in the directory for the next server.
// Stop the consumers and close the clients using it first. It may be called
// more than once.
func (s *Server) Shutdown() {
	s.shutdown.Do(func() { natsconn.ShutdownEmbedded(s.srv) })
}
