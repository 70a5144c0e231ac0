package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// Auth says how to authenticate to NATS and whether to use TLS. At most one
// of user/password, token, NKey seed and credentials may be set.
type Auth struct {
	User     string
	Password string
	Token    string
	// NKeySeedFile is a file holding a user NKey seed ("SU...").
	NKeySeedFile string
	// CredsFile is a decentralized-auth credentials file (user JWT and seed).
	CredsFile string
	// TLS: CAFile verifies the server; CertFile and KeyFile present a client
	// certificate; ServerName overrides the name checked in the server's certificate.
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
}

// Options returns the nats.go options for a, checking that files exist and
// that the choices are consistent.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	set := 0
	if a.User != "" || a.Password != "" {
		if a.User == "" {
			return nil, errors.New("nats auth: a password without a user")
		}
		set++
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		set++
		opts = append(opts, nats.Token(a.Token))
	}
	if a.NKeySeedFile != "" {
		set++
		o, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats auth: nkey seed file %s: %w", a.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if a.CredsFile != "" {
		set++
		if _, err := os.Stat(a.CredsFile); err != nil {
			return nil, fmt.Errorf("nats auth: credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if set > 1 {
		return nil, errors.New("nats auth: choose one of user/password, token, nkey seed file and credentials file")
	}
	if a.CAFile != "" || a.CertFile != "" || a.KeyFile != "" || a.ServerName != "" {
		cfg, err := a.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

func (a Auth) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: a.ServerName}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("nats tls: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats tls: CA file %s holds no PEM certificate", a.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, errors.New("nats tls: a client certificate needs both a cert file and a key file")
	}
	if a.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats tls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
