package config

import (
	"github.com/spf13/pflag"

	"github.com/nodeq/nodeq/internal/natsconn"
)

// AuthFlags are the NATS authentication and TLS flags both commands take.
type AuthFlags struct {
	fs *pflag.FlagSet
	a  natsconn.Auth
}

// BindAuthFlags registers the flags on fs.
func BindAuthFlags(fs *pflag.FlagSet) *AuthFlags {
	f := &AuthFlags{fs: fs}
	fs.StringVar(&f.a.User, "nats-user", "", "NATS user (nats.user; env NODEQ_NATS_USER)")
	fs.StringVar(&f.a.Password, "nats-password", "", "NATS password (nats.password; env NODEQ_NATS_PASSWORD, preferred: flags show in process lists)")
	fs.StringVar(&f.a.Token, "nats-token", "", "NATS token (nats.token; env NODEQ_NATS_TOKEN, preferred)")
	fs.StringVar(&f.a.NKeySeedFile, "nats-nkey", "", "file with a user NKey seed (nats.nkey_seed_file)")
	fs.StringVar(&f.a.CredsFile, "nats-creds", "", "NATS credentials file, JWT and seed (nats.creds_file)")
	fs.StringVar(&f.a.CAFile, "tls-ca", "", "CA certificate file to verify the NATS server (nats.tls.ca_file)")
	fs.StringVar(&f.a.CertFile, "tls-cert", "", "client certificate file (nats.tls.cert_file)")
	fs.StringVar(&f.a.KeyFile, "tls-key", "", "client key file (nats.tls.key_file)")
	fs.StringVar(&f.a.ServerName, "tls-server-name", "", "name to verify in the server's certificate (nats.tls.server_name)")
	return f
}

// Overlay returns base with every flag that was given replacing its field.
func (f *AuthFlags) Overlay(base natsconn.Auth) natsconn.Auth {
	for name, dst := range map[string]*string{
		"nats-user": &base.User, "nats-password": &base.Password, "nats-token": &base.Token, "nats-nkey": &base.NKeySeedFile,
		"nats-creds": &base.CredsFile, "tls-ca": &base.CAFile, "tls-cert": &base.CertFile, "tls-key": &base.KeyFile,
		"tls-server-name": &base.ServerName,
	} {
		if fl := f.fs.Lookup(name); fl != nil && fl.Changed {
			*dst = fl.Value.String()
		}
	}
	return base
}

// SetNATS writes a into the configuration's nats section.
func (c *Config) SetNATS(a natsconn.Auth) {
	n := &c.NATS
	n.User, n.Password, n.Token, n.NKeySeedFile, n.CredsFile = a.User, a.Password, a.Token, a.NKeySeedFile, a.CredsFile
	n.TLS = TLS{CAFile: a.CAFile, CertFile: a.CertFile, KeyFile: a.KeyFile, ServerName: a.ServerName}
}
