package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// startConsumerRun runs the consumer's main path in the background and
// waits until it is ready, returning the URL it logged and a stop function
// that returns its exit code.
func startConsumerRun(t *testing.T, args []string, getenv func(string) string) (string, *syncBuffer, func() int) {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, append(args, "--log-format", "json"), logs, getenv) }()
	stop := func() int {
		cancel()
		select {
		case code := <-exit:
			return code
		case <-time.After(15 * time.Second):
			t.Fatal("consumer did not stop")
			return -1
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ready := logs.logLine("consumer ready"); ready != nil {
			url, _ := ready["nats_url"].(string)
			return url, logs, stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("consumer never became ready; logs:\n%s", logs.String())
		}
		select {
		case code := <-exit:
			cancel()
			t.Fatalf("consumer exited with %d; logs:\n%s", code, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// echoThrough publishes an echo task over a connection with opts and waits for its result.
func echoThrough(t *testing.T, url string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect with the right credentials: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	inbox := nc.NewInbox()
	sub, _ := nc.SubscribeSync(inbox)
	if _, err := queue.NewPublisher(js, queue.DefaultNames()).Publish(t.Context(), &task.Envelope{NodeType: "echo", Payload: []byte("ping"), ReplyTo: inbox}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.DecodeResult(m.Data, m.Header.Get("Content-Type"))
	if err != nil || !res.OK || string(res.Output) != "ping" {
		t.Fatalf("result %+v, %v", res, err)
	}
}

func envOf(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// TestEmbeddedServerRequiresConfiguredAuth: with credentials configured and
// no URL, the embedded server requires them, the consumer connects with
// them, and a task is served.
func TestEmbeddedServerRequiresConfiguredAuth(t *testing.T) {
	const token, password = "tok-9f8e7d6c5b4a", "pw-0a1b2c3d4e"
	for _, c := range []struct {
		name   string
		args   []string
		env    map[string]string
		secret string
		right  nats.Option
		wrong  nats.Option
	}{
		{"token from the environment", nil, map[string]string{"NODEQ_NATS_TOKEN": token}, token, nats.Token(token), nats.Token("tok-guess")},
		{"token flag", []string{"--nats-token", token}, nil, token, nats.Token(token), nats.Token("tok-guess")},
		{"user flag, password from the environment", []string{"--nats-user", "svc"}, map[string]string{"NODEQ_NATS_PASSWORD": password}, password,
			nats.UserInfo("svc", password), nats.UserInfo("svc", "guess")},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, c.args...)
			url, logs, stop := startConsumerRun(t, args, envOf(c.env))
			defer func() {
				if code := stop(); code != exitOK {
					t.Fatalf("exit %d; logs:\n%s", code, logs.String())
				}
				if strings.Contains(logs.String(), c.secret) {
					t.Fatalf("secret in the logs:\n%s", logs.String())
				}
			}()
			for what, opts := range map[string][]nats.Option{"no credentials": nil, "wrong credentials": {c.wrong}} {
				if nc, err := nats.Connect(url, opts...); err == nil {
					nc.Close()
					t.Fatalf("%s: connected to the embedded server", what)
				} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
					t.Fatalf("%s: %v, want an authorization violation", what, err)
				}
			}
			echoThrough(t, url, c.right)
		})
	}
}

// TestEmbeddedServerNKey: an NKey seed file makes the embedded server accept only that user.
func TestEmbeddedServerNKey(t *testing.T) {
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	url, logs, stop := startConsumerRun(t, []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--nats-nkey", seedFile}, envOf(nil))
	defer func() {
		if code := stop(); code != exitOK {
			t.Fatalf("exit %d; logs:\n%s", code, logs.String())
		}
	}()
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("connected without the nkey")
	}
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, url, opt)
}

// TestEmbeddedServerRefusesOpenListen: a non-loopback listen address
// without authentication, or a credentials file, stops the consumer at
// start with a message saying what to do.
func TestEmbeddedServerRefusesOpenListen(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, []string{"refusing to listen on 0.0.0.0:0 without authentication", "nats.user and nats.password", "nats.token", "--listen 127.0.0.1:0"}},
		{[]string{"--listen", ":0"}, []string{"refusing to listen on :0 without authentication"}},
		{[]string{"--listen", "127.0.0.1:0", "--nats-creds", filepath.Join(t.TempDir(), "user.creds")}, []string{"operator mode", "standalone nats-server", "--nats-url"}},
	} {
		var out syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // a consumer that starts anyway stops with 0
		code := run(ctx, append(c.args, "--data-dir", t.TempDir()), &out, noEnv)
		cancel()
		if code != exitFailed {
			t.Fatalf("%v: exit %d, want %d:\n%s", c.args, code, exitFailed, out.String())
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Fatalf("%v: output lacks %q:\n%s", c.args, w, out.String())
			}
		}
	}
	// With authentication, listening on every interface is allowed.
	url, logs, stop := startConsumerRun(t, []string{"--listen", "0.0.0.0:0", "--data-dir", t.TempDir()}, envOf(map[string]string{"NODEQ_NATS_TOKEN": "tok-0123456789"}))
	echoThrough(t, url, nats.Token("tok-0123456789"))
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d; logs:\n%s", code, logs.String())
	}
}
