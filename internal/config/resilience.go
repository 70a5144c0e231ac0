package config

import (
	"errors"
	"fmt"

	"github.com/nodeq/nodeq/internal/resilience"
)

// inherit fills the zero fields of r from parent.
func (r Retry) inherit(parent Retry) Retry {
	if r.Policy == "" {
		r.Policy = parent.Policy
	}
	if r.Attempts == 0 {
		r.Attempts = parent.Attempts
	}
	if r.Delay == 0 {
		r.Delay = parent.Delay
	}
	if r.Multiplier == 0 {
		r.Multiplier = parent.Multiplier
	}
	if r.MaxDelay == 0 {
		r.MaxDelay = parent.MaxDelay
	}
	if r.Jitter == 0 {
		r.Jitter = parent.Jitter
	}
	return r
}

// policy builds the retry policy, or says which key is wrong.
func (r Retry) policy() (resilience.Policy, string, error) {
	switch r.Policy {
	case RetryNone:
		return resilience.None(), "", nil
	case RetryFixed:
		if err := r.outOfBound("attempts"); err != nil {
			return nil, "attempts", err
		}
		if r.Delay < 0 {
			return nil, "delay", errors.New("must not be negative")
		}
		return resilience.Fixed(r.Delay, r.Attempts), "", nil
	case RetryExponential:
		if err := r.outOfBound("attempts"); err != nil {
			return nil, "attempts", err
		}
		if r.Delay <= 0 {
			return nil, "delay", errors.New("must be a positive duration")
		}
		if err := r.outOfBound("multiplier"); err != nil {
			return nil, "multiplier", err
		}
		if r.MaxDelay < r.Delay {
			return nil, "max_delay", fmt.Errorf("%s is less than delay %s", formatDuration(r.MaxDelay), formatDuration(r.Delay))
		}
		if err := r.outOfBound("jitter"); err != nil {
			return nil, "jitter", err
		}
		return &resilience.Exponential{Base: r.Delay, Multiplier: r.Multiplier, Max: r.MaxDelay, Attempts: r.Attempts, Jitter: r.Jitter}, "", nil
	}
	return nil, "policy", fmt.Errorf("%q: want %s, %s or %s", r.Policy, RetryNone, RetryFixed, RetryExponential)
}

// RetryPolicy is the global in-process retry policy.
func (c *Config) RetryPolicy() resilience.Policy {
	p, _, _ := c.Retry.policy()
	return p
}

// RedeliveryPolicy is the redelivery setting.
func (c *Config) RedeliveryPolicy() resilience.Redelivery {
	return resilience.Redelivery{MaxDeliveries: c.Redelivery.MaxDeliveries, Backoff: c.Redelivery.Backoff}
}

// nodeRetry returns a node's policy: its own retry block over the global one.
func (c *Config) nodeRetry(n Node) resilience.Policy {
	if n.Retry == nil {
		return nil
	}
	p, _, _ := n.Retry.inherit(c.Retry).policy()
	return p
}

// BreakerSettings returns the breaker settings, and false when the breaker is disabled.
func (c *Config) BreakerSettings() (resilience.BreakerSettings, bool) {
	b := c.Breaker
	var trip []func(resilience.Counts) bool
	if b.FailureThreshold > 0 {
		trip = append(trip, resilience.ConsecutiveFailures(uint32(b.FailureThreshold)))
	}
	s := resilience.BreakerSettings{Cooldown: b.Cooldown, MaxCooldown: b.MaxCooldown}
	if b.FailureRate > 0 {
		trip = append(trip, resilience.FailureRate(b.FailureRate, uint32(b.MinRequests)))
		s.Interval = b.Window
	}
	if len(trip) == 0 {
		return resilience.BreakerSettings{}, false
	}
	s.ReadyToTrip = resilience.AnyOf(trip...)
	return s, true
}

// validateResilience checks retry, redelivery and breaker.
func (c *Config) validateResilience() []error {
	var errs []error
	checkRetry := func(keys []string, r Retry) {
		if _, field, err := r.policy(); err != nil {
			if field != "" {
				keys = append(keys, field)
			}
			errs = append(errs, c.fieldErrAt(keys, "%v", err))
		}
	}
	checkRetry([]string{"retry"}, c.Retry)
	for _, name := range sortedKeys(c.Nodes) {
		if r := c.Nodes[name].Retry; r != nil {
			checkRetry([]string{"nodes", name, "retry"}, r.inherit(c.Retry))
		}
	}
	for i, d := range c.Redelivery.Backoff {
		if d <= 0 {
			errs = append(errs, c.fieldErr("redelivery.backoff", "entry %d (%v) must be a positive duration", i+1, d))
		}
	}
	if c.Breaker.Scope != ScopeProcess && c.Breaker.Scope != ScopeFleet {
		errs = append(errs, c.fieldErr("breaker.scope", "%q: want %s or %s", c.Breaker.Scope, ScopeProcess, ScopeFleet))
	}
	if c.Breaker.FailureRate > 0 {
		if c.Breaker.MinRequests < 1 {
			errs = append(errs, c.fieldErr("breaker.min_requests", "%d: want at least 1 outcome before the failure rate counts", c.Breaker.MinRequests))
		}
		if c.Breaker.Window <= 0 {
			errs = append(errs, c.fieldErr("breaker.window", "must be a positive duration"))
		}
	}
	if c.Breaker.FailureThreshold > 0 || c.Breaker.FailureRate > 0 {
		if c.Breaker.Cooldown <= 0 {
			errs = append(errs, c.fieldErr("breaker.cooldown", "must be a positive duration"))
		}
		if c.Breaker.MaxCooldown < c.Breaker.Cooldown {
			errs = append(errs, c.fieldErr("breaker.max_cooldown", "%v is less than breaker.cooldown %v", c.Breaker.MaxCooldown, c.Breaker.Cooldown))
		}
	}
	return errs
}
