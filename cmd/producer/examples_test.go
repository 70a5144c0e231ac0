package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestExamplesRunAsWritten runs every example line of every command's help
// against a consumer, in a directory holding the files they name: each must
// exit 0.
func TestExamplesRunAsWritten(t *testing.T) {
	url := startConsumer(t)
	failSome(t, url) // records for dlq show 1
	t.Chdir(t.TempDir())
	for name, content := range map[string]string{
		"tasks.jsonl":  `{"node_type":"echo","payload":{"text":"hi"}}` + "\n",
		"payload.json": `{"text":"hi"}`,
	} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var examples []string
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				examples = append(examples, line)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(&app{getenv: func(string) string { return "" }}))
	if len(examples) < 20 {
		t.Fatalf("only %d examples found", len(examples))
	}
	for _, ex := range examples {
		t.Run(ex, func(t *testing.T) {
			args := shellWords(t, ex)
			if args[0] != "producer" {
				t.Fatalf("example %q does not start with producer", ex)
			}
			if args[1] == "ui" { // serves until stopped: check it serves, then stop it
				checkUIExample(t, append(args[1:], "--nats-url", url)...)
				return
			}
			code, out, errOut := runProducer(t, "y\n", append(args[1:], "--nats-url", url)...)
			if code != exitOK {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if args[1] == "pause" { // the examples after it expect a running fleet
				if code, _, errOut := runProducer(t, "", "resume", "--nats-url", url); code != exitOK {
					t.Fatalf("resume: %s", errOut)
				}
			}
		})
	}
}

// shellWords splits an example line as a shell would: on spaces, with
// single quotes keeping text together, and a # starting a comment.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var word strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			word.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			return words
		case strings.ContainsRune(`"|<>$;&`+"`\\", r):
			t.Fatalf("example %q: the test does not interpret %q", line, r)
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("example %q: unterminated quote", line)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}
