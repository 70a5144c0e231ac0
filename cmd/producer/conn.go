package main

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/natsconn"
)

// Where the connection settings come from, highest precedence first:
//
//  1. flags: -s/--server (alias --nats-url), --creds, the --nats-* and --tls-* flags;
//  2. the consumer's NODEQ_NATS_* variables (NODEQ_NATS_URL, NODEQ_NATS_PASSWORD, ...);
//  3. natscli's NATS_* variables (NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TOKEN,
//     NATS_CREDS, NATS_NKEY, NATS_CA, NATS_CERT, NATS_KEY);
//  4. a natscli context: --context, NATS_CONTEXT, or the selected one (natscontext.go).
//
// The server URL and each TLS file come from the first source that sets
// them. The credentials (user and password, token, nkey seed file or
// credentials file) come whole from the first source that sets any, so
// that, say, NATS_CREDS replaces a context's user and password rather than
// being sent with them (two kinds at once are refused). Only a user and
// its password may come from two sources: a source with one of them and no
// other credential takes the other from the next source that has it
// (--nats-user with NODEQ_NATS_PASSWORD).

// connFlags are the connection flags every command shares.
type connFlags struct {
	fs        *pflag.FlagSet
	url       string
	creds     string
	context   string
	noContext bool
	auth      *config.AuthFlags
}

func (c *connFlags) register(pf *pflag.FlagSet, _ func(string) string) {
	c.fs = pf
	pf.StringVarP(&c.url, "server", "s", "", "NATS server `URLS`, comma-separated (env NATS_URL; default: the context's url, else "+nats.DefaultURL+")")
	pf.StringVar(&c.url, "nats-url", "", "NATS server `URLS`: same as --server")
	pf.StringVar(&c.creds, "creds", "", "NATS credentials `FILE`, JWT and seed (env NATS_CREDS); same as --nats-creds")
	pf.StringVar(&c.context, "context", "", "`NAME` of the natscli context to connect with (env NATS_CONTEXT; default: the one \"nats context select\" chose)")
	pf.BoolVar(&c.noContext, "no-context", false, "use no natscli context, not even the selected one")
	c.auth = config.BindAuthFlags(pf)
}

// changed reports whether the flag was given.
func (c *connFlags) changed(name string) bool {
	f := c.fs.Lookup(name)
	return f != nil && f.Changed
}

// connLayer is one source of connection settings.
type connLayer struct {
	source string // for errors: "flags", "NATS_* variables", a context
	// natscli: the values follow natscli's conventions (natscontext_refs.go).
	natscli bool
	// names are the settings' names for errors, by context field name
	// (url, user, password, token, nkey, creds, ca, cert, key); nil: the
	// source followed by the field name.
	names map[string]string
	url   string
	auth  natsconn.Auth
	ctx   *natsContext // the context layer's
}

func (l *connLayer) name(field string) string {
	if l.names != nil {
		return l.names[field]
	}
	return l.source + ": " + field
}

// connSettings are the connection settings after precedence.
type connSettings struct {
	url  string
	auth natsconn.Auth
	// credsFrom is the source of the credentials, "" without any.
	credsFrom string
	ctx       *natsContext // the context used, or nil
}

// settings works out the connection settings from the flags, the
// environment and the natscli context.
func (c *connFlags) settings(getenv func(string) string) (*connSettings, error) {
	flags, err := c.flagLayer()
	if err != nil {
		return nil, err
	}
	nodeq, err := nodeqLayer(getenv)
	if err != nil {
		return nil, err
	}
	layers := []*connLayer{flags, nodeq, natsEnvLayer(getenv)}
	name, how, err := chooseContext(c.context, c.changed("context"), c.noContext, getenv)
	if err != nil {
		return nil, err
	}
	if how != "" { // one was chosen, if only as --context ""
		ctx, err := loadContext(name, how, getenv)
		if err != nil {
			return nil, err
		}
		layers = append(layers, ctx.layer())
	}
	return mergeLayers(layers, getenv)
}

func (c *connFlags) flagLayer() (*connLayer, error) {
	l := &connLayer{source: "flags", auth: c.auth.Overlay(natsconn.Auth{}), names: map[string]string{
		"nkey": "--nats-nkey", "creds": "--creds",
	}}
	if c.changed("server") || c.changed("nats-url") {
		l.url = c.url
	}
	if c.changed("creds") {
		if c.changed("nats-creds") && l.auth.CredsFile != c.creds {
			return nil, usagef("--creds and --nats-creds name different files: give one")
		}
		l.auth.CredsFile = c.creds
	} else {
		l.names["creds"] = "--nats-creds"
	}
	return l, nil
}

// nodeqLayer reads the consumer's NODEQ_NATS_* variables.
func nodeqLayer(getenv func(string) string) (*connLayer, error) {
	env := config.Default()
	err := env.ApplyEnv(func(k string) string {
		if k == "NATS_URL" { // natscli's: the next layer's
			return ""
		}
		return getenv(k)
	})
	if err != nil {
		return nil, err
	}
	return &connLayer{source: "NODEQ_NATS_* variables", url: env.NATS.URL, auth: env.Auth(), names: map[string]string{
		"nkey": "NODEQ_NATS_NKEY_SEED_FILE", "creds": "NODEQ_NATS_CREDS_FILE",
	}}, nil
}

// natsEnvVars are natscli's variables, by context field name.
var natsEnvVars = map[string]string{
	"url": "NATS_URL", "user": "NATS_USER", "password": "NATS_PASSWORD", "token": "NATS_TOKEN",
	"nkey": "NATS_NKEY", "creds": "NATS_CREDS", "ca": "NATS_CA", "cert": "NATS_CERT", "key": "NATS_KEY",
}

// natsEnvLayer reads natscli's NATS_* variables.
func natsEnvLayer(getenv func(string) string) *connLayer {
	v := func(field string) string { return getenv(natsEnvVars[field]) }
	return &connLayer{source: "NATS_* variables", natscli: true, names: natsEnvVars, url: v("url"), auth: natsconn.Auth{
		User: v("user"), Password: v("password"), Token: v("token"), NKeySeedFile: v("nkey"), CredsFile: v("creds"),
		CAFile: v("ca"), CertFile: v("cert"), KeyFile: v("key"),
	}}
}

// layer is the context as a source of settings.
func (c *natsContext) layer() *connLayer {
	return &connLayer{source: c.source(), natscli: true, ctx: c, url: c.URL, auth: natsconn.Auth{
		User: c.User, Password: c.Password, Token: c.Token, NKeySeedFile: c.NKey, CredsFile: c.Creds,
		CAFile: c.CA, CertFile: c.Cert, KeyFile: c.Key,
	}}
}

// hasCredentials reports whether a sets any credential.
func hasCredentials(a natsconn.Auth) bool {
	return a.User != "" || a.Password != "" || a.Token != "" || a.NKeySeedFile != "" || a.CredsFile != ""
}

// mergeLayers applies the precedence (see the top of this file) and
// resolves natscli's references in the values it keeps.
func mergeLayers(layers []*connLayer, getenv func(string) string) (*connSettings, error) {
	s := &connSettings{url: nats.DefaultURL}
	var ctxLayer *connLayer
	for _, l := range layers {
		if l.ctx != nil {
			s.ctx, ctxLayer = l.ctx, l
		}
	}
	first := func(from []*connLayer, get func(*connLayer) string) *connLayer {
		for _, l := range from {
			if get(l) != "" {
				return l
			}
		}
		return nil
	}
	if l := first(layers, func(l *connLayer) string { return l.url }); l != nil {
		s.url = l.url
	}

	credsAt := -1
	for i, l := range layers {
		if hasCredentials(l.auth) {
			credsAt = i
			break
		}
	}
	if s.ctx != nil {
		if err := s.ctx.unsupported(credsAt < 0 || layers[credsAt] == ctxLayer); err != nil {
			return nil, err
		}
	}
	if credsAt >= 0 {
		if err := s.takeCredentials(layers, credsAt, getenv); err != nil {
			return nil, err
		}
	}

	tlsFiles := []struct {
		field string
		get   func(*natsconn.Auth) *string
	}{
		{"ca", func(a *natsconn.Auth) *string { return &a.CAFile }},
		{"cert", func(a *natsconn.Auth) *string { return &a.CertFile }},
		{"key", func(a *natsconn.Auth) *string { return &a.KeyFile }},
	}
	for _, f := range tlsFiles {
		l := first(layers, func(l *connLayer) string { return *f.get(&l.auth) })
		if l == nil {
			continue
		}
		v := *f.get(&l.auth)
		if l.natscli {
			var err error
			if v, err = refPath(l.name(f.field), v, getenv); err != nil {
				return nil, err
			}
		}
		*f.get(&s.auth) = v
	}
	if l := first(layers, func(l *connLayer) string { return l.auth.ServerName }); l != nil {
		s.auth.ServerName = l.auth.ServerName
	}
	return s, nil
}

// takeCredentials sets the credentials of layers[at], the first source that
// has any, with a missing user or password from a later source.
func (s *connSettings) takeCredentials(layers []*connLayer, at int, getenv func(string) string) error {
	l := layers[at]
	a := l.auth
	s.credsFrom = l.source
	userL, pwL := l, l
	if (a.User == "") != (a.Password == "") && a.Token == "" && a.NKeySeedFile == "" && a.CredsFile == "" {
		for _, later := range layers[at+1:] {
			if a.User == "" && later.auth.User != "" {
				userL = later
				break
			}
			if a.Password == "" && later.auth.Password != "" {
				pwL = later
				break
			}
		}
		switch {
		case userL != l:
			s.credsFrom += " and " + userL.source
		case pwL != l:
			s.credsFrom += " and " + pwL.source
		}
	}
	s.auth.User = userL.auth.User
	secrets := []struct {
		l     *connLayer
		field string
		v     string
		dst   *string
	}{
		{pwL, "password", pwL.auth.Password, &s.auth.Password},
		{l, "token", a.Token, &s.auth.Token},
	}
	for _, x := range secrets {
		v := x.v
		if x.l.natscli && v != "" {
			var err error
			if v, err = refSecret(x.l.name(x.field), v, getenv); err != nil {
				return err
			}
		}
		*x.dst = v
	}
	files := []struct {
		field string
		v     string
		dst   *string
	}{
		{"nkey", a.NKeySeedFile, &s.auth.NKeySeedFile},
		{"creds", a.CredsFile, &s.auth.CredsFile},
	}
	for _, f := range files {
		v := f.v
		if l.natscli && v != "" {
			var err error
			if v, err = refPath(l.name(f.field), v, getenv); err != nil {
				return err
			}
		}
		if err := checkFileSetting(l.name(f.field), v); err != nil {
			return err
		}
		*f.dst = v
	}
	return nil
}

// options returns the nats.go options of the settings.
func (s *connSettings) options() ([]nats.Option, error) {
	a := s.auth
	creds := natsconn.Auth{User: a.User, Password: a.Password, Token: a.Token, NKeySeedFile: a.NKeySeedFile, CredsFile: a.CredsFile}
	opts, err := creds.Options()
	if err != nil {
		return nil, fmt.Errorf("%w (credentials from %s)", err, s.credsFrom)
	}
	tls, err := natsconn.Auth{CAFile: a.CAFile, CertFile: a.CertFile, KeyFile: a.KeyFile, ServerName: a.ServerName}.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, tls...)
	if c := s.ctx; c != nil {
		if c.TLSFirst {
			opts = append(opts, nats.TLSHandshakeFirst())
		}
		if c.InboxPrefix != "" {
			opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
		}
	}
	return opts, nil
}

// jetStream returns the JetStream handle of nc, in the context's JetStream
// domain or under its API prefix if it names one.
func (s *connSettings) jetStream(nc *nats.Conn, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	switch c := s.ctx; {
	case c != nil && c.JSDomain != "":
		return jetstream.NewWithDomain(nc, c.JSDomain, opts...)
	case c != nil && c.JSAPIPrefix != "":
		return jetstream.NewWithAPIPrefix(nc, c.JSAPIPrefix, opts...)
	}
	return jetstream.New(nc, opts...)
}

// connect dials NATS and returns the connection and a JetStream handle
// made with jsOpts.
func (a *app) connect(jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	s, err := a.conn.settings(a.getenv)
	if err != nil {
		return nil, nil, err
	}
	opts, err := s.options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsconn.Connect(s.url, "nodeq-producer", a.log(), append(opts, nats.MaxReconnects(3))...)
	if err != nil {
		if s.ctx != nil { // which one may not be obvious: natscli selected it
			err = fmt.Errorf("%w (with %s)", err, s.ctx.source())
		}
		return nil, nil, err
	}
	js, err := s.jetStream(nc, jsOpts...)
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
