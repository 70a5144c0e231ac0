package natsconn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// EmbeddedOptions configure an in-process nats-server with JetStream.
type EmbeddedOptions struct {
	// Listen is host:port for client connections. Port 0 picks a free port.
	// Default "127.0.0.1:4222". A host that is not loopback (127.0.0.0/8,
	// ::1, localhost), including an empty host, 0.0.0.0 and ::, requires Auth.
	Listen string
	// StoreDir is where JetStream keeps its files. Required. The server
	// holds an OS lock on StoreDir/nodeq.lock (StoreLockFile) while it
	// runs: a second server on the same directory is refused with a
	// *StoreInUseError.
	StoreDir string
	// SyncAlways makes the server fsync every write before acknowledging it.
	SyncAlways bool
	// ServerName names the server in logs and cluster views. Default "nodeq-embedded".
	ServerName string
	// Auth is what every client must present: user and password, token, or
	// an NKey (the server accepts the public key of the seed in
	// NKeySeedFile). Empty: no authentication, allowed on loopback only.
	// A credentials file (JWT) needs a server in operator mode and is
	// refused. The TLS fields are not used: the embedded server serves no TLS.
	Auth Auth
}

// StartEmbedded starts a nats-server with JetStream in this process and waits
// until it accepts connections. Stop it with Shutdown and WaitForShutdown.
//
// Before the server starts it locks the store directory, recording this
// process's pid, the client URL and the start time in StoreLockFile; the
// lock is released once the server's shutdown completes (a new server of
// this process on the same directory waits for that). If another server,
// of any process, holds the directory, StartEmbedded returns an error
// wrapping a *StoreInUseError that names it.
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
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
	}
	authed, err := o.Auth.serverAuth(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if !authed && !IsLoopbackHost(host) {
		return nil, fmt.Errorf("embedded nats-server: refusing to listen on %s without authentication: anyone who can reach it could publish tasks, "+
			"read their results and delete the queues; set nats.user and nats.password (NODEQ_NATS_USER, NODEQ_NATS_PASSWORD) or nats.token "+
			"(NODEQ_NATS_TOKEN) or nats.nkey_seed_file, or listen on loopback only (--listen 127.0.0.1:%d)", o.Listen, port)
	}
	knownURL := ""
	if port != 0 {
		knownURL = "nats://" + o.Listen
	}
	lock, err := lockStore(o.StoreDir, knownURL)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if l, err := net.Listen("tcp", o.Listen); err != nil {
		lock.release()
		return nil, fmt.Errorf("embedded nats-server: cannot listen on %s: %w (is another consumer's embedded server running? join it with --nats-url nats://%s, or pick another --listen)", o.Listen, err, o.Listen)
	} else {
		_ = l.Close()
	}
	opts.Port = port
	s, err := server.NewServer(opts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		lock.release()
		return nil, fmt.Errorf("embedded nats-server: not ready to accept connections on %s within 10s (is the port in use?)", o.Listen)
	}
	if err := lock.running(s); err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		lock.release()
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	return s, nil
}

// IsLoopbackHost reports whether host (as in host:port) names only the
// loopback interface: "localhost", 127.0.0.0/8 or ::1. An empty host,
// 0.0.0.0 and :: listen on every interface and are not loopback.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serverAuth sets opts to require a's credentials and reports whether any
// are configured.
func (a Auth) serverAuth(opts *server.Options) (bool, error) {
	set := 0
	for _, v := range []string{a.User + a.Password, a.Token, a.NKeySeedFile, a.CredsFile} {
		if v != "" {
			set++
		}
	}
	switch {
	case set == 0:
		return false, nil
	case set > 1:
		return false, errors.New("nats auth: choose one of user/password, token, nkey seed file and credentials file")
	case a.CredsFile != "":
		return false, fmt.Errorf("nats.creds_file (%s) holds a JWT, which only a nats-server in operator mode (decentralized auth) accepts, "+
			"and the embedded server is not one: run a standalone nats-server with your operator and account configuration and point "+
			"nats.url (--nats-url) at it, or use nats.user/nats.password, nats.token or nats.nkey_seed_file with the embedded server", a.CredsFile)
	case a.User != "" || a.Password != "":
		if a.User == "" {
			return false, errors.New("nats auth: a password without a user")
		}
		if a.Password == "" {
			return false, fmt.Errorf("nats auth: user %q has no password: the embedded server needs both nats.user and nats.password (NODEQ_NATS_PASSWORD)", a.User)
		}
		opts.Username, opts.Password = a.User, a.Password
	case a.Token != "":
		opts.Authorization = a.Token
	case a.NKeySeedFile != "":
		seed, err := os.ReadFile(a.NKeySeedFile)
		if err != nil {
			return false, fmt.Errorf("nats auth: nkey seed file: %w", err)
		}
		kp, err := nkeys.ParseDecoratedNKey(seed)
		clear(seed)
		if err != nil {
			return false, fmt.Errorf("nats auth: nkey seed file %s: %w", a.NKeySeedFile, err)
		}
		pub, err := kp.PublicKey()
		kp.Wipe()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return false, fmt.Errorf("nats auth: nkey seed file %s does not hold a user NKey seed (SU...)", a.NKeySeedFile)
		}
		opts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	}
	return true, nil
}
