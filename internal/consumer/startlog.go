package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/resilience"
)

// startInfoTimeout bounds the read of the durable consumer's state after
// start-up; the info set-up read stands in when it fails.
const startInfoTimeout = 2 * time.Second

// warnHeldAtStart logs, right after "consumer ready", what keeps this
// process from pulling although it is ready: a fleet-wide pause on the
// server, and its breaker open by an operator's command or the fleet's
// state (both taken before pulling starts). Without it, a process started
// into a pause logs only that it is ready, and then nothing.
func (c *Consumer) warnHeldAtStart(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, startInfoTimeout)
	defer cancel()
	info, err := c.durable.Info(ctx)
	if err != nil {
		info = c.durable.CachedInfo()
	}
	var snap *resilience.Snapshot
	if c.breaker != nil {
		s := c.breaker.Snapshot()
		snap = &s
	}
	logHeldAtStart(c.log, info, snap, c.fleet != nil)
}

// logHeldAtStart warns about a pause in info (nil: unknown, nothing said)
// and an open breaker in snap (nil: no breaker); fleetScope says the
// breaker follows the fleet's state.
func logHeldAtStart(log *slog.Logger, info *jetstream.ConsumerInfo, snap *resilience.Snapshot, fleetScope bool) {
	if info != nil && info.Paused {
		if fleet.Indefinite(info.PauseRemaining) {
			log.Warn("fleet paused: no task is pulled until resumed (producer resume)", "until", "resumed")
		} else {
			until := time.Now().Add(info.PauseRemaining).UTC().Truncate(time.Second).Format(time.RFC3339)
			log.Warn("fleet paused: no task is pulled until "+until+" or producer resume", "until", until)
		}
	}
	if snap == nil || snap.State != resilience.StateOpen {
		return
	}
	by := "this process's breaker"
	switch {
	case snap.Forced:
		by = "operator"
	case fleetScope:
		by = "fleet"
	}
	until := snap.Until.UTC().Truncate(time.Second).Format(time.RFC3339)
	log.Warn("circuit breaker open at start: no task starts until "+until+" or producer breaker close", "until", until, "by", by)
}
