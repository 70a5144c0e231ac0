package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/natstest"
)

var publishSummary = regexp.MustCompile(`published (\d+), duplicates (\d+), failed (\d+), not confirmed (\d+)(?:, not sent (\d+))? in `)

// TestPublishFileGivesUpWithoutPubAck: with no task stream, while a plain
// subscriber on tasks.> keeps the server from answering "no responders",
// no PubAck ever comes. `producer publish --file --timeout 1s` must give up,
// exit 1 and say how many tasks were not confirmed and why; every task it
// sent is reported as not confirmed, none is counted as published.
func TestPublishFileGivesUpWithoutPubAck(t *testing.T) {
	srv := natstest.Server(t) // no streams
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	seen := map[string]bool{} // task IDs that reached the plain subscriber: sent
	if _, err := nc.Subscribe("tasks.>", func(m *nats.Msg) {
		mu.Lock()
		seen[m.Header.Get("Nats-Msg-Id")] = true
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		lines  int
		window string
	}{
		{"all in flight", 5, "256"},
		{"window of 2", 12, "2"}, // stops sending at the first timeout
	} {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			clear(seen)
			mu.Unlock()
			file := filepath.Join(t.TempDir(), "tasks.jsonl")
			var lines []string
			for i := range c.lines {
				lines = append(lines, fmt.Sprintf(`{"id":"dl-%s-%02d","node_type":"echo","payload":{"i":%d}}`, strings.ReplaceAll(c.name, " ", "-"), i, i))
			}
			if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, producerBinary(t), "publish", "--file", file, "--timeout", "1s", "--window", c.window, "--nats-url", srv.ClientURL())
			cmd.Env = plainEnv()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			runErr := cmd.Run()
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("producer still waiting after 60s (--timeout 1s):\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("producer: %v, exit code %d, want 1\nstdout: %s\nstderr: %s", runErr, code, stdout.String(), stderr.String())
			}
			t.Logf("gave up after %v:\n%s%s", took.Round(time.Millisecond), stdout.String(), lastLine(stderr.String()))

			m := publishSummary.FindStringSubmatch(stdout.String())
			if m == nil {
				t.Fatalf("no summary on stdout: %q", stdout.String())
			}
			num := func(s string) int { n, _ := strconv.Atoi(s); return n }
			published, duplicates, failed, unconfirmed, notSent := num(m[1]), num(m[2]), num(m[3]), num(m[4]), num(m[5])
			confirmed := published + duplicates
			if confirmed != 0 || failed != 0 || unconfirmed == 0 {
				t.Fatalf("summary %q: want nothing confirmed or failed, some not confirmed", m[0])
			}
			want := fmt.Sprintf("%d of %d tasks not confirmed: no PubAck within 1s: is there a stream for tasks.>? start a consumer first", unconfirmed, c.lines)
			if !strings.Contains(stderr.String(), want) {
				t.Fatalf("stderr lacks %q:\n%s", want, stderr.String())
			}

			// Every task that was sent (the subscriber saw it) is reported
			// on stderr as not confirmed, and only those.
			reported := map[string]bool{}
			for _, l := range strings.Split(stderr.String(), "\n") {
				if id, _, ok := strings.Cut(strings.TrimPrefix(l, "task "), ": not confirmed: "); ok && strings.HasPrefix(l, "task ") {
					reported[id] = true
				}
			}
			mu.Lock()
			sent := len(seen)
			for id := range seen {
				if !reported[id] {
					t.Errorf("task %s was sent but not reported as not confirmed", id)
				}
			}
			mu.Unlock()
			if len(reported) != unconfirmed || sent != unconfirmed {
				t.Fatalf("%d reported as not confirmed on stderr, %d sent, summary says %d", len(reported), sent, unconfirmed)
			}
			if c.lines > 2*num(c.window)+1 && notSent == 0 {
				t.Fatalf("summary %q: the producer kept sending after the first PubAck timeout", m[0])
			}

			lost := c.lines - confirmed - unconfirmed - notSent - failed
			t.Logf("published attempts %d = confirmed %d + reported unconfirmed %d (not confirmed %d, not sent %d), %d silently lost",
				c.lines, confirmed, unconfirmed+notSent, unconfirmed, notSent, lost)
			if lost != 0 {
				t.Fatalf("%d tasks silently lost", lost)
			}
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:] + "\n"
}
