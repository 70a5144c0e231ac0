package config

import (
	"strings"
	"testing"
)

// TestResolvedMaxPayload: consumer.max_payload resolves to what the
// consumer caps task bodies at, streams.max_msg_size when that is set and
// max_payload is 0 or larger; with streams.max_msg_size 0 the server
// decides both at start, and they stay 0.
func TestResolvedMaxPayload(t *testing.T) {
	for _, c := range []struct {
		maxMsgSize, maxPayload, want ByteSize
	}{
		{0, 0, 0},
		{0, 256 << 10, 256 << 10},
		{512 << 10, 0, 512 << 10},
		{512 << 10, 1 << 20, 512 << 10},
		{512 << 10, 256 << 10, 256 << 10},
	} {
		cfg := Default()
		cfg.Streams.MaxMsgSize, cfg.Consumer.MaxPayload = c.maxMsgSize, c.maxPayload
		if got := cfg.Resolved().Consumer.MaxPayload; got != c.want {
			t.Errorf("max_msg_size %v, max_payload %v: resolved %v, want %v", c.maxMsgSize, c.maxPayload, got, c.want)
		}
		if cfg.Consumer.MaxPayload != c.maxPayload {
			t.Fatal("Resolved changed the configuration it was called on")
		}
	}
}

// TestRedactedExplainsZeros: a zero that stands for no value (decided at
// start, or none) is printed with what it means, a value that is set is
// printed bare, and the comments do not change what the output reads back as.
func TestRedactedExplainsZeros(t *testing.T) {
	cfg, err := Parse("z.yaml", []byte(`nodes:
  echo: {}
  capped: {executor: sleep, timeout: 5s, concurrency: 3}
  pool: {executor: worker, command: [cat], timeout: 5s, dir: /tmp, max_tasks_per_process: 100}
  cat: {executor: process, command: [cat], timeout: 5s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := cfg.Resolved().Redacted()
	section := func(name string) string {
		_, s, ok := strings.Cut(out, "\n    "+name+":\n")
		if !ok {
			t.Fatalf("no node %s:\n%s", name, out)
		}
		var b strings.Builder
		for line := range strings.Lines(s) {
			if !strings.HasPrefix(line, "        ") {
				break
			}
			b.WriteString(line)
		}
		return b.String()
	}
	for _, want := range []string{
		"max_msg_size: 0B # decided at start",
		"max_payload: 0B # streams.max_msg_size's, decided at start",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q:\n%s", want, out)
		}
	}
	for node, lines := range map[string][]string{
		"echo":   {"timeout: 0s # none of its own", "concurrency: 0 # no limit of its own"},
		"capped": {"timeout: 5s\n", "concurrency: 3\n"},
		"pool":   {"dir: /tmp\n", "max_tasks_per_process: 100\n", "concurrency: 0 # no limit"},
		"cat":    {`dir: "" # the consumer's working directory`},
	} {
		s := section(node)
		for _, line := range lines {
			if !strings.Contains(s, "        "+line) {
				t.Errorf("node %s: no line %q:\n%s", node, line, s)
			}
		}
	}

	back, err := Parse("out.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the output does not read back: %v\n%s", err, out)
	}
	if got := back.Redacted(); got != out {
		t.Errorf("read back and printed again, it differs:\n%s\nwant\n%s", got, out)
	}
}
