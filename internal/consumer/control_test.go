package consumer

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/resilience"
)

// TestActOnCommand: with breaker.scope process, an operator's open forces
// this process's breaker open until its time and a close resets it; each
// is logged at warn with who asked and why. Without a breaker the command
// is logged as not applying.
func TestActOnCommand(t *testing.T) {
	var logs bytes.Buffer
	c := &Consumer{log: slog.New(slog.NewTextHandler(&logs, nil)),
		breaker: resilience.NewBreaker(resilience.BreakerSettings{Name: "nodeq-workers"})}
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	c.actOnCommand(fleet.Order{Command: fleet.Command{Op: fleet.OpOpen, Until: until, By: `eve\x1b[2J`, Reason: "db maintenance", ID: "c1"}, Fleet: true})
	if s := c.breaker.Snapshot(); s.State != resilience.StateOpen || !s.Forced || !s.Until.Equal(until) {
		t.Fatalf("after an open: %+v", s)
	}
	c.actOnCommand(fleet.Order{Command: fleet.Command{Op: fleet.OpClose, By: "bob", ID: "c2"}})
	if s := c.breaker.State(); s != resilience.StateClosed {
		t.Fatalf("after a close: %v", s)
	}
	l := logs.String()
	for _, want := range []string{
		`level=WARN msg="circuit breaker opened by operator: no task starts and no probe runs until then" op=open by=eve\x1b[2J reason="db maintenance" target="every process" command_id=c1 until=` + until.UTC().Format(time.RFC3339),
		`level=WARN msg="circuit breaker closed by operator" op=close by=bob reason="" target="this process" command_id=c2`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}

	logs.Reset()
	c.breaker = nil
	c.actOnCommand(fleet.Order{Command: fleet.Command{Op: fleet.OpOpen, Until: until, By: "bob", ID: "c3"}, Fleet: true})
	if l := logs.String(); !strings.Contains(l, `level=WARN msg="operator command does not apply: this consumer has no circuit breaker`) || !strings.Contains(l, "command_id=c3") {
		t.Fatalf("without a breaker:\n%s", l)
	}
}
