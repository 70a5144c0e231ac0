package queue

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure an in-process nats-server with JetStream.
type EmbeddedOptions struct {
	// Listen is host:port for client connections. Port 0 picks a free port.
	// Default "127.0.0.1:4222".
	Listen string
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// SyncAlways makes the server fsync every write before acknowledging it.
	SyncAlways bool
	// ServerName names the server in logs and cluster views. Default "nodeq-embedded".
	ServerName string
}

// StartEmbedded starts a nats-server with JetStream in this process and waits
// until it accepts connections. Stop it with Shutdown and WaitForShutdown.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats-server: a store directory is required")
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:4222"
	}
	if o.ServerName == "" {
		o.ServerName = "nodeq-embedded"
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: listen address %q: want host:port: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded nats-server: listen address %q: bad port", o.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if l, err := net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("embedded nats-server: cannot listen on %s: %w (is another consumer's embedded server running? join it with --nats-url nats://%s, or pick another --listen)", o.Listen, err, o.Listen)
	} else {
		_ = l.Close()
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats-server: not ready to accept connections on %s within 10s (is the port in use?)", o.Listen)
	}
	return s, nil
}
