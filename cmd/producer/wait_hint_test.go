package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
)

// waitHint tells each state of the fleet apart, one outcome per subtest,
// and says only what the state shows.
func TestWaitHint(t *testing.T) {
	until := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	proc := func(id string, types ...string) fleet.ProcessInfo {
		return fleet.ProcessInfo{ID: id, NodeTypes: types, Breaker: fleet.ProcessBreaker{Scope: "process", State: "closed"}}
	}
	open := func(p fleet.ProcessInfo) fleet.ProcessInfo { p.Breaker.State, p.Paused = "open", true; return p }
	more := func(p fleet.ProcessInfo, n int) fleet.ProcessInfo { p.MoreNodeTypes = n; return p }
	stopping := func(p fleet.ProcessInfo) fleet.ProcessInfo { p.Stopping = true; return p }
	status := func(ps ...fleet.ProcessInfo) *fleet.Status {
		return &fleet.Status{Pending: 4, InFlight: 2, Processes: append([]fleet.ProcessInfo{}, ps...)}
	}
	with := func(st *fleet.Status, f func(*fleet.Status)) *fleet.Status { f(st); return st }

	cases := []struct {
		name string
		st   *fleet.Status
		err  error
		want waitState
		says []string // substrings of the hint
		not  []string // and not these
	}{
		{"state unreadable", nil, errors.New("nats: timeout\x1b[2J"), stateUnknown,
			[]string{"the fleet's state could not be read: nats: timeout\\x1b[2J"}, []string{"\x1b"}},
		{"registry unreadable", with(status(), func(s *fleet.Status) { s.ProcessesUnknown = "permissions violation" }), nil, stateUnknown,
			[]string{"the process registry could not be read: permissions violation", "4 task(s) pending, 2 in flight"}, nil},
		{"no process announced", status(), nil, stateNoProcess,
			[]string{"no consumer process has announced itself (in nodeq_processes)", "4 task(s) pending, 2 in flight across the fleet"}, nil},
		{"only stopping processes", status(stopping(proc("a", "echo"))), nil, stateNoProcess,
			[]string{"no consumer process runs: the 1 that announced themselves are stopping"}, nil},
		{"no process runs the node type", status(proc("a", "echo", "sleep"), proc("b", "echo"), stopping(proc("c", "resize"))), nil, stateNoNodeType,
			[]string{"2 consumer process(es) run, but none runs node type resize (they run echo,sleep)"}, nil},
		{"paused until resumed", with(status(proc("a", "resize")), func(s *fleet.Status) { s.Paused, s.PausedIndefinitely = true, true }), nil, statePaused,
			[]string{"the fleet is paused until resumed: no consumer pulls tasks (producer resume ends it)", "4 task(s) pending"}, []string{"2126", "breaker"}},
		{"paused until a time, no process", with(status(), func(s *fleet.Status) { s.Paused, s.PausedUntil = true, until }), nil, statePaused,
			[]string{"the fleet is paused until 2026-11-29T08:00:00Z"}, nil},
		{"paused by the fleet breaker", with(status(proc("a", "resize")), func(s *fleet.Status) {
			s.Paused, s.PausedUntil, s.Breaker, s.BreakerUntil = true, until, "open", until
		}), nil, statePaused,
			[]string{"paused until 2026-11-29T08:00:00Z", "the fleet's circuit breaker is open until 2026-11-29T08:00:00Z (producer breaker close ends it)"}, nil},
		{"fleet breaker open", with(status(proc("a", "resize")), func(s *fleet.Status) { s.Breaker, s.BreakerUntil = "open", until }), nil, stateBreakersOpen,
			[]string{"1 consumer process(es) run node type resize; the fleet's circuit breaker is open until 2026-11-29T08:00:00Z"}, nil},
		{"breakers open on all", status(open(proc("a", "resize")), open(proc("b", "resize", "echo")), proc("c", "echo")), nil, stateBreakersOpen,
			[]string{"2 consumer process(es) run node type resize; circuit breakers are open on 2 of 2: none of them starts a task"}, nil},
		{"breakers open on some", status(open(proc("a", "resize")), proc("b", "resize")), nil, stateBreakersOpen,
			[]string{"circuit breakers are open on 1 of 2, the others pull"}, nil},
		{"queued or running", status(proc("a", "resize"), open(proc("b", "echo"))), nil, stateQueued,
			[]string{"1 consumer process(es) run node type resize: the task is still queued or running; 4 task(s) pending, 2 in flight"}, []string{"breaker"}},
		{"node type maybe among those not listed", status(more(proc("a", "echo"), 3), proc("b", "echo")), nil, stateQueued,
			[]string{"none of the 2 listed consumer process(es) lists node type resize, but 1 list only some of theirs"}, nil},
		{"processes left out", with(status(proc("a", "echo")), func(s *fleet.Status) { s.ProcessesLeftOut = 5 }), nil, stateQueued,
			[]string{"none of the 1 listed consumer process(es) lists node type resize, but 5 are not listed"}, nil},
		{"hostile node types are escaped", status(proc("a", "echo\x1b]0;x\x07", strings.Repeat("t", 500))), nil, stateNoNodeType,
			[]string{`echo\x1b]0;x\x07`, "…"}, []string{"\x1b", "\x07", strings.Repeat("t", hintTypesWidth)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, hint := waitHint(c.st, c.err, "resize")
			if got != c.want {
				t.Errorf("state %d, want %d: %s", got, c.want, hint)
			}
			for _, s := range c.says {
				if !strings.Contains(hint, s) {
					t.Errorf("hint lacks %q:\n%s", s, hint)
				}
			}
			for _, s := range c.not {
				if strings.Contains(hint, s) {
					t.Errorf("hint has %q:\n%s", s, hint)
				}
			}
			if strings.Contains(hint, "is a consumer running?") {
				t.Errorf("the old guess is back: %s", hint)
			}
		})
	}
}
