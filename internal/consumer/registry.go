package consumer

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/version"
)

// announce puts this process in the fleet's process registry (fleet.Announcer,
// what producer status lists) while Run runs: at once, every few seconds,
// and at each change of the breaker's state. The stop it returns removes
// the entry and waits for that (at most a couple of seconds). Failing to
// announce is logged and changes nothing else.
func (c *Consumer) announce(ctx context.Context) (stop func()) {
	// The names operators already see and address (producer breaker
	// --process): with breaker.scope fleet, the fleet member ID (host/pid
	// and a random suffix), which the breaker's entries name; otherwise
	// the process ID of results and dead-letter records (host/pid).
	id := c.o.ID
	if c.fleet != nil {
		id = c.fleet.MemberID()
	}
	p := newProcessSnapshot(c, ctx)
	a, err := fleet.NewAnnouncer(c.js, c.names, id, p.snapshot, fleet.WithAnnounceLogger(c.log), fleet.WithReplicas(c.cfg.Streams.Replicas))
	if err != nil {
		c.log.Warn("process registry: this process is not announced", "err", err)
		return func() {}
	}
	if c.breaker != nil {
		// Before the fleet's state is applied: its change counts too.
		c.breaker.Observe(func(resilience.Transition) {
			p.breakerChanged()
			a.Changed()
		})
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(runCtx)
	}()
	go func() {
		select {
		case <-ctx.Done():
			a.Changed() // stopping: say so at once
		case <-done:
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// processSnapshot describes the process for its registry entry.
type processSnapshot struct {
	c        *Consumer
	stopping context.Context // done once shutdown began
	host     string
	started  time.Time

	mu           sync.Mutex
	breakerSince time.Time // when the breaker entered its state
	serverPaused bool      // the durable consumer was paused on the server, when last asked
}

// pausedCheckTimeout bounds the look at the durable consumer's pause.
const pausedCheckTimeout = 2 * time.Second

func newProcessSnapshot(c *Consumer, stopping context.Context) *processSnapshot {
	host, _ := os.Hostname()
	now := time.Now().UTC()
	return &processSnapshot{c: c, stopping: stopping, host: host, started: now, breakerSince: now}
}

// breakerChanged notes when the breaker entered its new state.
func (p *processSnapshot) breakerChanged() {
	p.mu.Lock()
	p.breakerSince = time.Now().UTC()
	p.mu.Unlock()
}

// snapshot is the process now; the Announcer sets its ID and names.
func (p *processSnapshot) snapshot() fleet.ProcessInfo {
	c := p.c
	info := fleet.ProcessInfo{Host: p.host, PID: os.Getpid(), Version: version.String(), Started: p.started, NodeTypes: c.types,
		Workers: c.cfg.Consumer.Workers, Prefetch: c.cfg.Consumer.Prefetch, InFlight: c.puller.InFlight(),
		Prefetched: c.puller.Prefetched(), DLQHeld: c.worker.Held(), Stopping: p.stopping.Err() != nil,
		Breaker: fleet.ProcessBreaker{Scope: "off"}}
	if c.breaker != nil {
		// Outside p.mu: a snapshot may move the breaker on (open to
		// half-open), which breakerChanged is told of.
		snap := c.breaker.Snapshot()
		info.Breaker.Scope = config.ScopeProcess
		if c.fleet != nil {
			info.Breaker.Scope = config.ScopeFleet
		}
		info.Breaker.State, info.Breaker.Until = snap.State.String(), snap.Until
		info.Paused = snap.State == resilience.StateOpen
	}
	paused := p.pausedOnServer()
	p.mu.Lock()
	info.Breaker.Since = p.breakerSince
	p.mu.Unlock()
	if c.breaker == nil {
		info.Breaker.Since = time.Time{}
	}
	info.Paused = info.Paused || paused
	return info
}

// pausedOnServer reports whether the durable consumer is paused on the
// server (producer pause, a fleet breaker's trip); when the server does
// not say, what it said last.
func (p *processSnapshot) pausedOnServer() bool {
	ctx, cancel := context.WithTimeout(context.Background(), pausedCheckTimeout)
	defer cancel()
	ci, err := p.c.durable.Info(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.serverPaused = ci.Paused
	}
	return p.serverPaused
}
