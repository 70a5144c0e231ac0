package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
)

// The summary says how many tasks were confirmed, how many not, and why.
func TestSummary(t *testing.T) {
	timeout := fmt.Errorf("publish task a: no PubAck within 3s: %w", jetstream.ErrAsyncPublishTimeout)
	cases := []struct {
		name    string
		s       summary
		line    string
		wantErr []string // substrings; none: no error
	}{
		{"all confirmed", summary{published: 3, duplicates: 1, elapsed: time.Second},
			"published 3, duplicates 1, failed 0, not confirmed 0 in 1s (3 tasks/s)", nil},
		{"failed lines", summary{published: 2, duplicates: 1, failed: 2, elapsed: time.Second},
			"published 2, duplicates 1, failed 2, not confirmed 0 in 1s", []string{"2 of 5 tasks were not published"}},
		{"no PubAck", summary{published: 1, unconfirmed: 4, unconfirmedErr: timeout, notSent: 5, elapsed: 3 * time.Second},
			"published 1, duplicates 0, failed 0, not confirmed 4, not sent 5 in 3s",
			[]string{"4 of 10 tasks not confirmed: no PubAck within 3s: is there a stream for tasks.>? start a consumer first",
				"they may or may not be stored", "5 not sent: publishing stopped at the first PubAck timeout"}},
		{"connection lost", summary{published: 7, unconfirmed: 2, unconfirmedErr: fmt.Errorf("publish task b: %w", nats.ErrDisconnected), failed: 1},
			"published 7, duplicates 0, failed 1, not confirmed 2 in 0s",
			[]string{"2 of 10 tasks not confirmed: publish task b: " + nats.ErrDisconnected.Error(), "1 of 10 tasks were not published"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.s.line(); !strings.HasPrefix(got, c.line) {
				t.Errorf("line %q, want prefix %q", got, c.line)
			}
			err := c.s.err(3*time.Second, "tasks")
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatalf("err %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("err nil")
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q lacks %q", err, w)
				}
			}
		})
	}
}

// publish --file against a server that never answers (no stream, a plain
// subscriber on the subjects) gives up after --timeout.
func TestPublishFileNoPubAck(t *testing.T) {
	srv := natstest.Server(t)
	nc, _ := natstest.Connect(t, srv)
	if _, err := nc.Subscribe("tasks.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(`{"id":"n1","node_type":"echo"}`+"\n"+`{"id":"n2","node_type":"echo"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	var out, errOut string
	go func() {
		defer close(done)
		code, out, errOut = runProducer(t, "", "publish", "--file", path, "--timeout", "300ms", "--nats-url", srv.ClientURL())
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("publish --file --timeout 300ms still waiting after 60s")
	}
	if code != exitFailed || !strings.Contains(out, "published 0, duplicates 0, failed 0, not confirmed 2 in") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, w := range []string{"task n1: not confirmed: ", "task n2: not confirmed: ", "2 of 2 tasks not confirmed: no PubAck within 300ms"} {
		if !strings.Contains(errOut, w) {
			t.Fatalf("stderr lacks %q: %q", w, errOut)
		}
	}
	// A single publish says the same about its deadline.
	code, _, errOut = runProducer(t, "", "publish", "echo", "x", "--timeout", "300ms", "--nats-url", srv.ClientURL())
	if code != exitFailed || !strings.Contains(errOut, "no PubAck within 300ms: is there a stream for tasks.>?") {
		t.Fatalf("single publish: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut = runProducer(t, "", "publish", "echo", "x", "--timeout", "0s"); code != exitUsage || !strings.Contains(errOut, "--timeout") {
		t.Fatalf("--timeout 0: exit %d, stderr %q", code, errOut)
	}
}
