package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// readmeConfig returns the YAML example under README's "## Configuration"
// heading, which README says to save as nodeq.yaml in the repository's root.
func readmeConfig(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`README.md has no yaml block under "## Configuration"`)
	}
	return block
}

// repoPath matches a file of the repository named in the example, run or
// commented out, e.g. sdk/python/examples/upper_node.py.
var repoPath = regexp.MustCompile(`[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+\.(?:py|wasm|sh)\b`)

// TestReadmeConfigRunsAsWritten: README's example configuration, saved as a
// file in the repository's root, passes --check-config there, every command
// it names exists (on the PATH, or in the repository), and a consumer run
// with it runs its process node.
func TestReadmeConfigRunsAsWritten(t *testing.T) {
	example := readmeConfig(t)
	path := filepath.Join(t.TempDir(), "nodeq.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir("../..") // README: "nodeq.yaml, in the repository's root"

	var stdout, stderr syncBuffer
	if code := runTo(context.Background(), []string{"--config", path, "--check-config"}, &stdout, &stderr, noEnv); code != exitOK {
		t.Fatalf("consumer --config README's example --check-config: exit %d:\n%s", code, stderr.String())
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range cfg.Nodes {
		if len(n.Command) == 0 {
			continue
		}
		if _, err := exec.LookPath(n.Command[0]); err != nil {
			t.Errorf("nodes.%s: command %q: %v", name, n.Command[0], err)
		}
		for _, arg := range n.Command[1:] {
			if repoPath.MatchString(arg) {
				if _, err := os.Stat(arg); err != nil {
					t.Errorf("nodes.%s: %v", name, err)
				}
			}
		}
	}
	for _, p := range repoPath.FindAllString(example, -1) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the example names %s: %v", p, err)
		}
	}
	if len(cfg.Nodes["upper"].Command) == 0 {
		t.Fatalf("the example has no upper node with a command, which README shows running:\n%s", example)
	}

	url, logs, stop := startConsumerRun(t, []string{"--config", path, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, noEnv)
	res := call(t, url, "upper", "hello")
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, logs.String())
	}
	if !res.OK || string(res.Output) != "HELLO" {
		t.Fatalf("upper hello: %+v (README says it prints HELLO)", res)
	}
}

// call publishes a task and waits for its result.
func call(t *testing.T, url, nodeType, payload string) *task.Result {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.NewPublisher(js, queue.DefaultNames()).Publish(t.Context(), &task.Envelope{NodeType: nodeType, Payload: []byte(payload), ReplyTo: inbox}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("no result for the %s task: %v", nodeType, err)
	}
	res, err := task.DecodeResult(m.Data, m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestMarkdownRendersWhole: in README.md and docs/*.md, outside code
// blocks, every table is one block of rows that starts with its header and
// delimiter rows (a blank line ends a table, and rows after it render as
// text), and every heading has a blank line after it (a heading is one
// line: text run into it is lost to the section).
func TestMarkdownRendersWhole(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	delimiter := regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)
	heading := regexp.MustCompile(`^#{1,6} `)
	for _, path := range append([]string{"../../README.md"}, docs...) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(path, "../../")
		lines := strings.Split(string(b), "\n")
		inCode := false
		for i, line := range lines {
			if strings.HasPrefix(line, "```") {
				inCode = !inCode
				continue
			}
			if inCode {
				continue
			}
			next := ""
			if i+1 < len(lines) {
				next = lines[i+1]
			}
			if strings.HasPrefix(line, "|") && (i == 0 || !strings.HasPrefix(lines[i-1], "|")) && !delimiter.MatchString(next) {
				t.Errorf("%s:%d: a table row that starts no table (no delimiter row after it; a blank line above it?): %.80s", name, i+1, line)
			}
			if heading.MatchString(line) && strings.TrimSpace(next) != "" {
				t.Errorf("%s:%d: heading %q is not followed by a blank line", name, i+1, line)
			}
		}
	}
}
