package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
)

// errNoResult marks a publish --wait that ran out of time: the task is
// still queued or running (exit status 3, exitNoResult).
var errNoResult = errors.New("no result")

// hintStatusTimeout bounds the read of the fleet's state after a wait ran
// out: a user who may not read it (least privilege) gets no answer at all.
const hintStatusTimeout = 3 * time.Second

// waitState is what waitHint found the fleet doing, one per case it tells
// apart.
type waitState int

const (
	// stateUnknown: the fleet's state could not be read.
	stateUnknown waitState = iota
	// stateNoProcess: no consumer process runs (none announced itself,
	// or those that did are stopping).
	stateNoProcess
	// stateNoNodeType: processes run, but none runs the task's node type.
	stateNoNodeType
	// statePaused: the fleet is paused on the server.
	statePaused
	// stateBreakersOpen: the fleet breaker, or the breakers of processes
	// that run the node type, are open.
	stateBreakersOpen
	// stateQueued: processes run the node type; the task is still queued
	// or running.
	stateQueued
)

// Widths of what the hint quotes from the shared state, in bytes.
const (
	hintErrWidth   = 200
	hintTypeWidth  = 64
	hintTypesWidth = 80
)

// fleetHint reads the fleet's state with js, within hintStatusTimeout,
// and says why a task of nodeType has no result yet.
func fleetHint(ctx context.Context, js jetstream.JetStream, names queue.Names, nodeType string) string {
	ctx, cancel := context.WithTimeout(ctx, hintStatusTimeout)
	defer cancel()
	st, err := fleet.GetStatus(ctx, js, names)
	_, hint := waitHint(st, err, nodeType)
	return hint
}

// waitHint says why a task of nodeType has no result yet, from the
// fleet's state st (or err, the reason st could not be read), read when
// the wait ran out. The first of these that holds is the answer: the state
// is unknown, the fleet is paused, no process runs, none runs the node
// type, breakers are open, or the task is queued or running. Every string
// from the shared state is clipped and escaped.
func waitHint(st *fleet.Status, err error, nodeType string) (waitState, string) {
	if err != nil || st == nil {
		why := "no status"
		if err != nil {
			why = err.Error()
		}
		return stateUnknown, "the fleet's state could not be read: " + clean(clip(why, hintErrWidth))
	}
	queued := fmt.Sprintf("%d task(s) pending, %d in flight across the fleet", st.Pending, st.InFlight)
	fleetOpen := ""
	if st.Breaker == "open" {
		fleetOpen = "the fleet's circuit breaker is open until " + st.BreakerUntil.UTC().Format(time.RFC3339) + " (producer breaker close ends it)"
	}
	if st.Paused {
		until := "resumed"
		if !st.PausedIndefinitely {
			until = st.PausedUntil.UTC().Format(time.RFC3339)
		}
		hint := "the fleet is paused until " + until + ": no consumer pulls tasks (producer resume ends it)"
		if fleetOpen != "" {
			hint += "; " + fleetOpen
		}
		return statePaused, hint + "; " + queued
	}
	if st.ProcessesUnknown != "" {
		return stateUnknown, "the process registry could not be read: " + clean(clip(st.ProcessesUnknown, hintErrWidth)) + "; " + queued
	}
	var live, stopping int
	var runs, maybe []fleet.ProcessInfo // list the node type; list only some of theirs
	var types []string
	for _, p := range st.Processes {
		if p.Stopping {
			stopping++
			continue
		}
		live++
		switch {
		case slices.Contains(p.NodeTypes, nodeType):
			runs = append(runs, p)
		case p.MoreNodeTypes > 0:
			maybe = append(maybe, p)
		}
		for _, t := range p.NodeTypes {
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	typ := clean(clip(nodeType, hintTypeWidth))
	unsure := len(runs) == 0 && (len(maybe) > 0 || st.ProcessesLeftOut > 0)
	switch {
	case unsure:
	case live == 0 && stopping > 0:
		return stateNoProcess, fmt.Sprintf("no consumer process runs: the %d that announced themselves are stopping; %s", stopping, queued)
	case live == 0:
		return stateNoProcess, fmt.Sprintf("no consumer process has announced itself (in %s): start one with the same --task-stream and --consumer; %s",
			fleet.ProcessBucket, queued)
	case len(runs) == 0:
		slices.Sort(types)
		return stateNoNodeType, fmt.Sprintf("%d consumer process(es) run, but none runs node type %s (they run %s): "+
			"the one that takes the task dead-letters it as unknown_node_type (producer dlq list --node-type %s); %s",
			live, typ, clean(clip(strings.Join(types, ","), hintTypesWidth)), typ, queued)
	}
	who := fmt.Sprintf("%d consumer process(es) run node type %s", len(runs), typ)
	if unsure {
		var why []string
		if len(maybe) > 0 {
			why = append(why, fmt.Sprintf("%d list only some of theirs", len(maybe)))
		}
		if st.ProcessesLeftOut > 0 {
			why = append(why, fmt.Sprintf("%d are not listed", st.ProcessesLeftOut))
		}
		who = fmt.Sprintf("none of the %d listed consumer process(es) lists node type %s, but %s", live, typ, strings.Join(why, " and "))
		runs = maybe
	}
	if fleetOpen != "" {
		return stateBreakersOpen, fmt.Sprintf("%s; %s: no task starts before then; %s", who, fleetOpen, queued)
	}
	open := 0
	for _, p := range runs {
		if p.Breaker.State == "open" {
			open++
		}
	}
	switch {
	case open > 0 && open == len(runs):
		return stateBreakersOpen, fmt.Sprintf("%s; circuit breakers are open on %d of %d: none of them starts a task until its breaker closes; %s",
			who, open, len(runs), queued)
	case open > 0:
		return stateBreakersOpen, fmt.Sprintf("%s; circuit breakers are open on %d of %d, the others pull: the task is still queued or running; %s",
			who, open, len(runs), queued)
	}
	return stateQueued, fmt.Sprintf("%s: the task is still queued or running; %s", who, queued)
}
