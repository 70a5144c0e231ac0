package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// TestConnectAsNATSCLI: against a server that wants a user and password,
// the producer connects with a natscli context (selected, named with
// --context or NATS_CONTEXT), with NATS_USER and NATS_PASSWORD, and with a
// flag over a context's wrong password; a wrong password fails without
// being shown.
func TestConnectAsNATSCLI(t *testing.T) {
	const user, password, wrong = "alice", "s3cret-pw", "wrong-pw-123"
	srv := natstest.ServerWith(t, func(o *server.Options) { o.Username, o.Password = user, password })
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(t.Context(), js, queue.DefaultNames(), queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}

	h := newCtxHome(t)
	h.context("good", `{"url": "`+srv.ClientURL()+`", "user": "`+user+`", "password": "`+password+`"}`)
	h.context("wrongpw", `{"url": "`+srv.ClientURL()+`", "user": "`+user+`", "password": "`+wrong+`"}`)
	h.context("nocreds", `{"url": "`+srv.ClientURL()+`"}`)

	produce := func(env map[string]string, args ...string) (int, string) {
		t.Helper()
		getenv := func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			return h.getenv(k)
		}
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"publish", "echo", `{"text":"hi"}`}, args...), strings.NewReader(""), &out, &errb, getenv)
		for _, secret := range []string{password, wrong} {
			if strings.Contains(out.String()+errb.String(), secret) {
				t.Errorf("%v: the output shows a password: %q %q", args, out.String(), errb.String())
			}
		}
		return code, errb.String()
	}
	ok := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"--context", nil, []string{"--context", "good"}},
		{"NATS_CONTEXT", map[string]string{"NATS_CONTEXT": "good"}, nil},
		{"NATS_USER and NATS_PASSWORD", map[string]string{"NATS_URL": srv.ClientURL(), "NATS_USER": user, "NATS_PASSWORD": password}, nil},
		{"NATS_* over a context without credentials", map[string]string{"NATS_USER": user, "NATS_PASSWORD": password}, []string{"--context", "nocreds"}},
		{"a flag over a context's wrong password", map[string]string{"NODEQ_NATS_PASSWORD": password}, []string{"--context", "wrongpw", "--nats-user", user}},
		{"-s with the selected context's credentials", nil, []string{"-s", srv.ClientURL()}},
	}
	h.selectCtx("good")
	for _, c := range ok {
		if code, errOut := produce(c.env, c.args...); code != exitOK {
			t.Errorf("%s: exit %d, stderr %q", c.name, code, errOut)
		}
	}

	fail := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"a context's wrong password", nil, []string{"--context", "wrongpw"}},
		{"a wrong NATS_PASSWORD over the selected context", map[string]string{"NATS_USER": user, "NATS_PASSWORD": wrong}, nil},
		{"no credentials", nil, []string{"--no-context", "--server", srv.ClientURL()}},
	}
	for _, c := range fail {
		code, errOut := produce(c.env, c.args...)
		if code != exitFailed || !strings.Contains(strings.ToLower(errOut), "authorization violation") {
			t.Errorf("%s: exit %d, stderr %q; want %d and an authorization violation", c.name, code, errOut, exitFailed)
		}
	}
	if code, errOut := produce(nil, "--context", "missing"); code != exitUsage || !strings.Contains(errOut, "missing.json") {
		t.Errorf("a missing context: exit %d, stderr %q", code, errOut)
	}
}
