package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"

	"github.com/nodeq/nodeq/internal/natsconn"
)

// ctxHome is a temporary home directory with natscli's context directory,
// and the environment a test gives the producer.
type ctxHome struct {
	t    *testing.T
	home string
	env  map[string]string
}

func newCtxHome(t *testing.T) *ctxHome {
	t.Helper()
	h := &ctxHome{t: t, home: t.TempDir()}
	h.env = map[string]string{"HOME": h.home}
	if err := os.MkdirAll(h.contextDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *ctxHome) natsDir() string    { return filepath.Join(h.home, ".config", "nats") }
func (h *ctxHome) contextDir() string { return filepath.Join(h.natsDir(), "context") }
func (h *ctxHome) getenv(k string) string {
	return h.env[k]
}

// write writes a file, relative to the home directory unless absolute.
func (h *ctxHome) write(path, content string) string {
	h.t.Helper()
	if !filepath.IsAbs(path) {
		path = filepath.Join(h.home, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return path
}

// context writes the context name.
func (h *ctxHome) context(name, json string) string {
	h.t.Helper()
	return h.write(filepath.Join(h.contextDir(), name+".json"), json)
}

// selectCtx writes natscli's selection file.
func (h *ctxHome) selectCtx(name string) {
	h.t.Helper()
	h.write(filepath.Join(h.natsDir(), "context.txt"), name)
}

// settings parses args as the producer's connection flags and works out
// the settings.
func (h *ctxHome) settings(args ...string) (*connSettings, error) {
	h.t.Helper()
	fs := pflag.NewFlagSet("producer", pflag.ContinueOnError)
	var c connFlags
	c.register(fs, h.getenv)
	if err := fs.Parse(args); err != nil {
		h.t.Fatal(err)
	}
	return c.settings(h.getenv)
}

func (h *ctxHome) mustSettings(args ...string) *connSettings {
	h.t.Helper()
	s, err := h.settings(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// TestContextSelection: --context, then NATS_CONTEXT, then the context
// natscli selected; --no-context uses none.
func TestContextSelection(t *testing.T) {
	h := newCtxHome(t)
	for _, name := range []string{"sel", "env", "flag"} {
		h.context(name, `{"url": "nats://`+name+`:4222"}`)
	}
	url := func(args ...string) string {
		t.Helper()
		return h.mustSettings(args...).url
	}

	if got := url(); got != nats.DefaultURL {
		t.Errorf("nothing selected: url %q, want %q", got, nats.DefaultURL)
	}
	h.selectCtx("sel\n")
	if got := url(); got != "nats://sel:4222" {
		t.Errorf("selected: url %q", got)
	}
	h.env["NATS_CONTEXT"] = "env"
	if got := url(); got != "nats://env:4222" {
		t.Errorf("NATS_CONTEXT: url %q", got)
	}
	if got := url("--context", "flag"); got != "nats://flag:4222" {
		t.Errorf("--context: url %q", got)
	}
	if got := url("--no-context"); got != nats.DefaultURL {
		t.Errorf("--no-context: url %q", got)
	}
	if s := h.mustSettings("--context", "flag"); s.ctx == nil || s.ctx.name != "flag" || s.ctx.how != "--context" {
		t.Errorf("--context: context %+v", s.ctx)
	}
	_, err := h.settings("--context", "flag", "--no-context")
	if !isUsage(err) || !strings.Contains(err.Error(), "--no-context") {
		t.Errorf("--context with --no-context: %v, want a usage error", err)
	}

	// XDG_CONFIG_HOME, when set, is where natscli keeps them.
	delete(h.env, "NATS_CONTEXT")
	xdg := t.TempDir()
	h.env["XDG_CONFIG_HOME"] = xdg
	h.write(filepath.Join(xdg, "nats", "context", "x.json"), `{"url": "nats://xdg:4222"}`)
	if got := url(); got != nats.DefaultURL {
		t.Errorf("XDG_CONFIG_HOME without a selection: url %q (read HOME's?)", got)
	}
	h.write(filepath.Join(xdg, "nats", "context.txt"), "x")
	if got := url(); got != "nats://xdg:4222" {
		t.Errorf("XDG_CONFIG_HOME: url %q", got)
	}

	// Without HOME or XDG_CONFIG_HOME there is no selected context, and a
	// named one cannot be found.
	h.env = map[string]string{}
	if got := url(); got != nats.DefaultURL {
		t.Errorf("no HOME: url %q", got)
	}
	if _, err := h.settings("--context", "flag"); !isUsage(err) || !strings.Contains(err.Error(), "neither XDG_CONFIG_HOME nor HOME") {
		t.Errorf("no HOME, --context: %v", err)
	}
}

func isUsage(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// TestContextPrecedence: flags, then NODEQ_NATS_*, then NATS_*, then the
// context; credentials come whole from one source.
func TestContextPrecedence(t *testing.T) {
	h := newCtxHome(t)
	creds := h.write("user.creds", "not read before connecting")
	h.context("c", `{"url": "nats://ctx:4222", "user": "ctxuser", "password": "ctxpw", "ca": "~/ctx-ca.pem", "cert": "ctx.pem", "key": "ctx.key"}`)
	h.selectCtx("c")

	s := h.mustSettings()
	want := natsconn.Auth{User: "ctxuser", Password: "ctxpw", CAFile: filepath.Join(h.home, "ctx-ca.pem"), CertFile: "ctx.pem", KeyFile: "ctx.key"}
	if s.url != "nats://ctx:4222" || s.auth != want || !strings.Contains(s.credsFrom, `context "c"`) {
		t.Errorf("context alone: %q %+v from %q", s.url, s.auth, s.credsFrom)
	}

	h.env["NATS_URL"] = "nats://env:4222"
	h.env["NATS_USER"] = "envuser"
	h.env["NATS_CERT"] = "env.pem"
	s = h.mustSettings()
	// NATS_USER without NATS_PASSWORD takes the context's password: a user
	// and its password may come from two sources.
	want = natsconn.Auth{User: "envuser", Password: "ctxpw", CAFile: filepath.Join(h.home, "ctx-ca.pem"), CertFile: "env.pem", KeyFile: "ctx.key"}
	if s.url != "nats://env:4222" || s.auth != want {
		t.Errorf("NATS_*: %q %+v", s.url, s.auth)
	}

	h.env["NATS_PASSWORD"] = "envpw"
	h.env["NODEQ_NATS_URL"] = "nats://nodeq:4222"
	h.env["NODEQ_NATS_TOKEN"] = "nodeqtoken"
	s = h.mustSettings()
	if s.url != "nats://nodeq:4222" || s.auth.Token != "nodeqtoken" || s.auth.User != "" || s.auth.Password != "" || s.credsFrom != "NODEQ_NATS_* variables" {
		t.Errorf("NODEQ_NATS_*: %q %+v from %q", s.url, s.auth, s.credsFrom)
	}

	for _, flag := range []string{"-s", "--server", "--nats-url"} {
		s = h.mustSettings(flag, "nats://flag:4222", "--creds", creds)
		if s.url != "nats://flag:4222" || s.auth.CredsFile != creds || s.auth.Token != "" || s.auth.User != "" || s.credsFrom != "flags" {
			t.Errorf("%s and --creds: %q %+v from %q", flag, s.url, s.auth, s.credsFrom)
		}
	}
	// --nats-user without a password takes the next source's password
	// (NATS_PASSWORD), not NODEQ_NATS_TOKEN's token.
	s = h.mustSettings("--nats-user", "flaguser")
	if s.auth != (natsconn.Auth{User: "flaguser", Password: "envpw", CAFile: want.CAFile, CertFile: "env.pem", KeyFile: "ctx.key"}) || s.credsFrom != "flags and NATS_* variables" {
		t.Errorf("--nats-user: %+v from %q", s.auth, s.credsFrom)
	}
	delete(h.env, "NODEQ_NATS_TOKEN")
	h.env["NODEQ_NATS_PASSWORD"] = "nodeqpw"
	s = h.mustSettings("--nats-user", "flaguser")
	if s.auth.User != "flaguser" || s.auth.Password != "nodeqpw" || s.credsFrom != "flags and NODEQ_NATS_* variables" {
		t.Errorf("--nats-user with NODEQ_NATS_PASSWORD: %+v from %q", s.auth, s.credsFrom)
	}

	// A context's credentials are not mixed with another kind from a
	// higher source.
	delete(h.env, "NODEQ_NATS_PASSWORD")
	delete(h.env, "NATS_USER")
	delete(h.env, "NATS_PASSWORD")
	h.env["NATS_CREDS"] = creds
	s = h.mustSettings()
	if s.auth.CredsFile != creds || s.auth.User != "" || s.auth.Password != "" {
		t.Errorf("NATS_CREDS over a context with a user: %+v", s.auth)
	}

	_, err := h.settings("--creds", "a", "--nats-creds", "b")
	if !isUsage(err) {
		t.Errorf("--creds and --nats-creds: %v, want a usage error", err)
	}

	// An error in the credentials says where they came from, not what they are.
	h.env = map[string]string{"HOME": h.home, "NATS_PASSWORD": "lonely-secret"}
	_, err = h.mustSettings("--no-context").options()
	if err == nil || !strings.Contains(err.Error(), "a password without a user (credentials from NATS_* variables)") || strings.Contains(err.Error(), "lonely-secret") {
		t.Errorf("a password without a user: %v", err)
	}
}

// TestContextNamesAreHostile: a context name from a flag, NATS_CONTEXT or
// the selection file cannot reach outside the context directory.
func TestContextNamesAreHostile(t *testing.T) {
	h := newCtxHome(t)
	h.write(filepath.Join(h.natsDir(), "evil.json"), `{"url": "nats://evil:4222"}`)
	h.write("evil.json", `{"url": "nats://evil:4222"}`)
	names := []string{
		"../evil", "../../../evil", "..", "a/b", `a\b`, "/etc/passwd", "x/../../evil", "",
		"bad\x1b[2Jname", "bad\u202ename", "nul\x00", "bad\xffutf8", "line\nbreak", strings.Repeat("a", 300),
	}
	for _, name := range names {
		check := func(how string, err error) {
			t.Helper()
			if !isUsage(err) {
				t.Errorf("%s %q: %v, want a usage error", how, name, err)
				return
			}
			msg := err.Error()
			if strings.ContainsFunc(msg, dangerous) || !strings.Contains(msg, "context name") || strings.Contains(msg, "evil:4222") {
				t.Errorf("%s %q: message %q", how, name, msg)
			}
		}
		_, err := h.settings("--context", name)
		check("--context", err)
		if name == "" {
			continue // an empty NATS_CONTEXT or selection is none
		}
		h.env["NATS_CONTEXT"] = name
		_, err = h.settings()
		check("NATS_CONTEXT", err)
		delete(h.env, "NATS_CONTEXT")
		if !strings.ContainsAny(name, "\n\x00") { // the selection file is trimmed
			h.selectCtx(name)
			_, err = h.settings()
			check("selected", err)
		}
	}
	// Dots, spaces and unicode are names natscli allows.
	h.context("prod.eu west é", `{"url": "nats://ok:4222"}`)
	if s := h.mustSettings("--context", "prod.eu west é"); s.url != "nats://ok:4222" {
		t.Errorf("a name with dots and spaces: url %q", s.url)
	}
}

// TestContextFileProblems: a missing context is a usage error naming the
// file; a malformed one an error that quotes nothing from it.
func TestContextFileProblems(t *testing.T) {
	h := newCtxHome(t)
	_, err := h.settings("--context", "nope")
	want := filepath.Join(h.contextDir(), "nope.json")
	if !isUsage(err) || !strings.Contains(err.Error(), "no file "+want) || exitCode(err) != exitUsage {
		t.Errorf("missing: %v", err)
	}
	h.selectCtx("gone")
	_, err = h.settings()
	if !isUsage(err) || !strings.Contains(err.Error(), "gone.json") || !strings.Contains(err.Error(), "--no-context") {
		t.Errorf("selected but missing: %v", err)
	}
	if _, err := h.settings("--no-context"); err != nil {
		t.Errorf("selected but missing, --no-context: %v", err)
	}

	const secret = "hunter2-secret"
	cases := map[string]string{
		"truncated":   `{"url": "nats://x:4222", "password": "` + secret,
		"not JSON":    secret,
		"array":       `["` + secret + `"]`,
		"wrong type":  `{"password": ["` + secret + `"]}`,
		"number url":  `{"url": 4222, "password": "` + secret + `"}`,
		"huge":        `{"description": "` + strings.Repeat("x", maxContextFile) + `", "password": "` + secret + `"}`,
		"bad tls bit": `{"tls_first": "` + secret + `"}`,
	}
	for name, content := range cases {
		h.context("bad", content)
		_, err := h.settings("--context", "bad")
		if err == nil || isUsage(err) || !strings.Contains(err.Error(), `context "bad"`) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := os.Remove(filepath.Join(h.contextDir(), "bad.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(h.contextDir(), "bad.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := h.settings("--context", "bad"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
}

// TestContextReferences: natscli's env:// and file:// references, ~ and
// $VAR, are resolved; others are refused; no secret is shown in an error.
func TestContextReferences(t *testing.T) {
	h := newCtxHome(t)
	h.env["PW"] = "from-env"
	h.env["DIR"] = "certs"
	h.write("pw.txt", "from-file\n")
	h.context("refs", `{"user": "u", "password": "env://PW", "ca": "file://~/$DIR/ca.pem", "cert": "${DIR}/c.pem", "key": "FILE://~/k.pem"}`)
	s := h.mustSettings("--context", "refs")
	want := natsconn.Auth{User: "u", Password: "from-env", CAFile: filepath.Join(h.home, "certs/ca.pem"), CertFile: "certs/c.pem", KeyFile: filepath.Join(h.home, "k.pem")}
	if s.auth != want {
		t.Errorf("got %+v, want %+v", s.auth, want)
	}
	h.context("refs", `{"token": "file://~/pw.txt", "creds": "~/u.creds"}`)
	s = h.mustSettings("--context", "refs")
	if s.auth.Token != "from-file" || s.auth.CredsFile != filepath.Join(h.home, "u.creds") {
		t.Errorf("file:// token, ~ creds: %+v", s.auth)
	}
	// A password that merely has a colon is a password.
	h.context("refs", `{"user": "u", "password": "pass:word"}`)
	if s := h.mustSettings("--context", "refs"); s.auth.Password != "pass:word" {
		t.Errorf("password with a colon: %q", s.auth.Password)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, json string
		env        map[string]string
		want       string
	}{
		{"op:// password", `{"user": "u", "password": "op://vault/item/password"}`, nil, "password is a reference (op:) that the producer cannot resolve"},
		{"nsc:// creds", `{"creds": "nsc://operator/account/user"}`, nil, "creds is a reference (nsc:) that"},
		{"unset env://", `{"token": "env://NOPE"}`, nil, `"NOPE", which is not set`},
		{"seed as nkey", `{"nkey": "` + string(seed) + `"}`, nil, "holds an nkey seed"},
		{"seed in NATS_NKEY", `{}`, map[string]string{"NATS_NKEY": string(seed)}, "NATS_NKEY holds an nkey seed"},
		{"seed in --nats-nkey's variable", `{}`, map[string]string{"NODEQ_NATS_NKEY_SEED_FILE": string(seed)}, "NODEQ_NATS_NKEY_SEED_FILE holds an nkey seed"},
		{"creds in NATS_CREDS", `{}`, map[string]string{"NATS_CREDS": "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n" + string(seed)}, "NATS_CREDS holds credentials"},
		{"socks proxy", `{"socks_proxy": "socks5://proxy:1080"}`, nil, "does not support socks_proxy"},
		{"nsc lookup", `{"nsc": "nsc://op/acc/user"}`, nil, "does not support nsc"},
	}
	for _, c := range refused {
		h.context("bad", c.json)
		for k, v := range c.env {
			h.env[k] = v
		}
		_, err := h.settings("--context", "bad")
		for k := range c.env {
			delete(h.env, k)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), string(seed)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// A context's unsupported credentials do not matter when a flag or a
	// variable gives others.
	h.context("bad", `{"nsc": "nsc://op/acc/user"}`)
	h.env["NATS_USER"], h.env["NATS_PASSWORD"] = "u", "p"
	if _, err := h.settings("--context", "bad"); err != nil {
		t.Errorf("nsc context under NATS_USER: %v", err)
	}
}

// TestContextOptions: tls_first, inbox_prefix and the JetStream domain
// reach the connection.
func TestContextOptions(t *testing.T) {
	h := newCtxHome(t)
	h.context("o", `{"tls_first": true, "inbox_prefix": "_I.me", "jetstream_domain": "hub"}`)
	s := h.mustSettings("--context", "o")
	opts, err := s.options()
	if err != nil {
		t.Fatal(err)
	}
	var o nats.Options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	if !o.TLSHandshakeFirst || o.InboxPrefix != "_I.me" || s.ctx.JSDomain != "hub" {
		t.Errorf("tls first %v, inbox prefix %q, domain %q", o.TLSHandshakeFirst, o.InboxPrefix, s.ctx.JSDomain)
	}
}
