package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// natscli keeps named connection settings, contexts, as JSON files in
// $XDG_CONFIG_HOME/nats/context/NAME.json (~/.config/nats/context without
// XDG_CONFIG_HOME), and the name that `nats context select` chose in
// $XDG_CONFIG_HOME/nats/context.txt. The producer reads them as natscli and
// jsm.go's natscontext package write them; it does not write them. (It does
// not import natscontext: that package brings an expression language, a
// second YAML library and a new antithesis SDK build into the module for a
// few JSON fields.)

// Limits on the files a context is read from: anything larger is not one.
const (
	maxContextFile  = 1 << 20
	maxSelectedFile = 4 << 10
	maxContextName  = 200 // bytes; the file name adds ".json"
)

// natsContext is the part of a natscli context that the producer uses.
// Paths and secrets are as written: see resolveRefs for what they may hold.
type natsContext struct {
	URL         string `json:"url"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Token       string `json:"token"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	TLSFirst    bool   `json:"tls_first"`
	InboxPrefix string `json:"inbox_prefix"`
	JSDomain    string `json:"jetstream_domain"`
	JSAPIPrefix string `json:"jetstream_api_prefix"`

	// Settings the producer cannot honour: a context that relies on one
	// is refused rather than used without it (see unsupported).
	NSC          string `json:"nsc"`
	UserJWT      string `json:"user_jwt"`
	UserSeed     string `json:"user_seed"`
	SocksProxy   string `json:"socks_proxy"`
	WinCertStore string `json:"windows_cert_store"`

	name string // as chosen
	path string // the file it was read from
	how  string // how it was chosen: "--context", "NATS_CONTEXT" or the selection file
}

// source names the context for errors.
func (c *natsContext) source() string {
	return fmt.Sprintf("context %q (%s, %s)", c.name, c.path, c.how)
}

// unsupportedCredentials names the setting by which the context
// authenticates in a way the producer does not support, or is "".
func (c *natsContext) unsupportedCredentials() string {
	switch {
	case c.NSC != "":
		return "nsc"
	case c.UserJWT != "":
		return "user_jwt"
	case c.UserSeed != "":
		return "user_seed"
	}
	return ""
}

// unsupported returns an error if the context sets what the producer cannot
// honour: a SOCKS proxy or a Windows certificate store always, credentials
// (nsc, user_jwt, user_seed) when no flag or variable overrides the context's
// credentials (credsUsed).
func (c *natsContext) unsupported(credsUsed bool) error {
	field := ""
	switch {
	case c.SocksProxy != "":
		field = "socks_proxy"
	case c.WinCertStore != "":
		field = "windows_cert_store"
	case credsUsed:
		field = c.unsupportedCredentials()
	}
	if field == "" {
		return nil
	}
	return fmt.Errorf("%s: the producer does not support %s; connect with a flag or a NATS_* variable instead, or with --no-context", c.source(), field)
}

// natsConfigDir is natscli's configuration directory, $XDG_CONFIG_HOME/nats
// or $HOME/.config/nats, or "" if neither variable is set.
func natsConfigDir(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "nats")
	}
	return ""
}

// chooseContext returns the name of the context to use and how it was
// chosen: flagName if the --context flag was given, else $NATS_CONTEXT,
// else the one natscli's selection file names. It returns how "" for
// none: with noContext, or when nothing names one.
func chooseContext(flagName string, flagSet, noContext bool, getenv func(string) string) (name, how string, err error) {
	switch {
	case noContext && flagSet:
		return "", "", usagef("--context and --no-context: choose one")
	case noContext:
		return "", "", nil
	case flagSet:
		return flagName, "--context", nil
	case getenv("NATS_CONTEXT") != "":
		return getenv("NATS_CONTEXT"), "NATS_CONTEXT", nil
	}
	dir := natsConfigDir(getenv)
	if dir == "" {
		return "", "", nil
	}
	sel := filepath.Join(dir, "context.txt")
	b, err := readLimited(sel, maxSelectedFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("selected natscli context: %w", err)
	}
	name = strings.TrimSpace(string(b))
	if name == "" {
		return "", "", nil
	}
	return name, "selected in " + sel, nil
}

// checkContextName refuses a name that could not be a context file in the
// context directory: empty, too long, not UTF-8, or with a path separator,
// "..", a control or bidi character.
func checkContextName(name string) error {
	problem := ""
	switch {
	case name == "":
		problem = "is empty"
	case len(name) > maxContextName:
		problem = fmt.Sprintf("is longer than %d bytes", maxContextName)
	case !utf8.ValidString(name):
		problem = "is not UTF-8"
	case strings.ContainsAny(name, `/\`):
		problem = `has a path separator ("/" or "\")`
	case strings.Contains(name, ".."):
		problem = `has ".."`
	case strings.ContainsFunc(name, dangerous):
		problem = "has a control character"
	}
	if problem == "" {
		return nil
	}
	return fmt.Errorf("context name %q %s", clip(name, 64), problem)
}

// loadContext reads the context chosen by chooseContext. A name that is not
// a valid context name, or names no context file, is a *usageError.
func loadContext(name, how string, getenv func(string) string) (*natsContext, error) {
	if err := checkContextName(name); err != nil {
		return nil, &usageError{fmt.Errorf("%s (%s)", err, how)}
	}
	dir := natsConfigDir(getenv)
	if dir == "" {
		return nil, usagef("context %q (%s): cannot find natscli's contexts: neither XDG_CONFIG_HOME nor HOME is set", name, how)
	}
	c := &natsContext{name: name, how: how, path: filepath.Join(dir, "context", name+".json")}
	b, err := readLimited(c.path, maxContextFile)
	if errors.Is(err, fs.ErrNotExist) {
		hint := "`nats context ls` lists the contexts there"
		if how != "--context" && how != "NATS_CONTEXT" {
			hint = "select another with `nats context select`, or pass --no-context"
		}
		return nil, usagef("context %q (%s): no file %s; %s", name, how, c.path, hint)
	}
	if err != nil {
		return nil, fmt.Errorf("context %q (%s): %w", name, how, err)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("%s: %s", c.source(), jsonProblem(err))
	}
	return c, nil
}

// jsonProblem describes a decoding error without quoting the text, which
// may hold a password.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("field %q is a JSON %s, want a %s", typ.Field, typ.Value, typ.Type)
	case errors.As(err, &typ):
		return fmt.Sprintf("want a JSON object, not a JSON %s", typ.Value)
	}
	return "not a context: cannot decode it"
}

// readLimited reads a regular file of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
