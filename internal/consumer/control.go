package consumer

import (
	"context"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
)

// controlTimeout bounds what a command does beyond the local breaker:
// with breaker.scope fleet, the shared entry and the pause or resume.
const controlTimeout = 5 * time.Second

// followControl follows the operators' commands to this process's
// breaker (producer breaker open|close, package fleet's control channel)
// until ctx ends, and returns the function that stops following and waits
// for it. The commands stored before start-up are read before it returns
// (a process that starts during a manual open stays out), within a few
// seconds; a failure to follow them never stops the process: it is
// logged and retried.
func (c *Consumer) followControl(ctx context.Context) (stop func()) {
	stop, err := fleet.WatchControl(ctx, c.js, c.names, c.controlIDs(), c.actOnCommand, c.log)
	if err != nil {
		c.log.Error("operator control of the breaker is off", "err", err)
		return func() {}
	}
	return stop
}

// controlIDs are the IDs an operator may name this process by: its ID
// (host/pid) and, with breaker.scope fleet, its name in the fleet.
func (c *Consumer) controlIDs() []string {
	ids := []string{c.o.ID}
	if c.fleet != nil {
		ids = append(ids, c.fleet.MemberID())
	}
	return ids
}

// actOnCommand carries out one operator's command on the breaker and
// logs it with who asked and why: for every process, with breaker.scope
// fleet, through the fleet's layer (shared entry, server-side pause and
// resume); otherwise on this process's breaker alone.
func (c *Consumer) actOnCommand(o fleet.Order) {
	target := "this process"
	if o.Fleet {
		target = "every process"
	}
	attrs := []any{"op", o.Op, "by", o.By, "reason", o.Reason, "target", target, "command_id", o.ID}
	if o.Op == fleet.OpOpen {
		attrs = append(attrs, "until", o.Until.UTC().Format(time.RFC3339), "for", time.Until(o.Until).Round(time.Second).String())
	}
	if c.breaker == nil {
		c.log.Warn("operator command does not apply: this consumer has no circuit breaker (breaker.failure_threshold and breaker.failure_rate are 0)", attrs...)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	var err error
	throughFleet := o.Fleet && c.fleet != nil
	switch o.Op {
	case fleet.OpOpen:
		c.log.Warn("circuit breaker opened by operator: no task starts and no probe runs until then", attrs...)
		if throughFleet {
			err = c.fleet.ForceOpen(ctx, o.Until)
		} else {
			c.breaker.ForceOpen(o.Until)
		}
	case fleet.OpClose:
		c.log.Warn("circuit breaker closed by operator", attrs...)
		if throughFleet {
			err = c.fleet.Reset(ctx)
		} else {
			c.breaker.Reset()
		}
	}
	if err != nil {
		c.log.Error("operator command: the fleet's shared breaker state or the server-side pause did not follow", append(attrs, "err", err)...)
	}
}
