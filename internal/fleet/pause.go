// Package fleet acts on the whole fleet of consumer processes that share
// one durable consumer: it pauses and resumes them on the server, reads
// their status, keeps the registry of live processes (registry.go), and
// keeps the fleet-wide state of the circuit breaker.
package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// Forever is how far in the future a pause "until resumed" ends.
const Forever = 100 * 365 * 24 * time.Hour

// Indefinite reports whether a pause with remaining time left is one
// "until resumed" (Pause until now+Forever) rather than one with an end an
// operator chose: more than Forever/2 is left.
func Indefinite(remaining time.Duration) bool { return remaining > Forever/2 }

// Pause stops delivery of the shared durable consumer to every consumer
// process until the given time (the server resumes it by itself then), or
// until Resume. Consumers keep running and pull nothing. Needs nats-server 2.11+.
func Pause(ctx context.Context, js jetstream.JetStream, n queue.Names, until time.Time) error {
	if _, err := js.PauseConsumer(ctx, n.TaskStream, n.Consumer, until); err != nil {
		return fmt.Errorf("pause consumer %s on %s: %w", n.Consumer, n.TaskStream, err)
	}
	return nil
}

// Resume ends a pause at once.
func Resume(ctx context.Context, js jetstream.JetStream, n queue.Names) error {
	if _, err := js.ResumeConsumer(ctx, n.TaskStream, n.Consumer); err != nil {
		return fmt.Errorf("resume consumer %s on %s: %w", n.Consumer, n.TaskStream, err)
	}
	return nil
}

// Status describes the shared consumer.
type Status struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Pending tasks wait in the stream, not yet delivered.
	Pending uint64 `json:"pending"`
	// InFlight tasks are delivered and not yet acked.
	InFlight int `json:"in_flight"`
	// Redelivered tasks are in flight after more than one delivery.
	Redelivered int `json:"redelivered"`
	// Waiting pull requests: roughly, idle workers across the fleet.
	Waiting int `json:"waiting_pulls"`
	// Paused, PausedUntil and PausedIndefinitely describe a fleet-wide
	// pause: it ends by itself at PausedUntil, or, for a pause until
	// resumed (see Indefinite), PausedUntil is zero and PausedIndefinitely
	// set.
	Paused             bool      `json:"paused"`
	PausedUntil        time.Time `json:"paused_until,omitzero"`
	PausedIndefinitely bool      `json:"paused_indefinitely,omitempty"`
	// DeadLetters is the number of records in the dead-letter stream.
	DeadLetters uint64 `json:"dead_letters"`
	// Breaker is the fleet-wide breaker's state ("closed", "open",
	// "half-open"), empty when no consumer runs with breaker.scope fleet.
	Breaker      string    `json:"fleet_breaker,omitempty"`
	BreakerUntil time.Time `json:"fleet_breaker_until,omitzero"`
	BreakerBy    string    `json:"fleet_breaker_by,omitempty"`
	// DLQRefusing sums the consumers' reports of failed tasks they hold
	// because the dead-letter stream refuses their records (full, gone,
	// not permitted): their outcome is kept and only the store is retried.
	DLQRefusing queue.HeldSummary `json:"dlq_refusing,omitzero"`
	// DLQRefusingUnknown says why the reports could not be read, if so.
	DLQRefusingUnknown string `json:"dlq_refusing_unknown,omitempty"`
	// DLQFull is set when the dead-letter stream is at its max_msgs, or has
	// less room left than 1 MiB or 1% of its max_bytes: it refuses records
	// that do not fit (Discard: New).
	DLQFull bool `json:"dlq_full,omitempty"`
	// Processes are the live consumer processes of the durable consumer,
	// from the process registry (ListProcesses): at most MaxProcesses;
	// ProcessesLeftOut counts those not listed, ProcessesMalformed the
	// unreadable entries skipped. Their strings come from a shared
	// bucket: escape them before printing them to a terminal.
	Processes          []ProcessInfo `json:"processes"`
	ProcessesLeftOut   int           `json:"processes_left_out,omitempty"`
	ProcessesMalformed int           `json:"processes_malformed,omitempty"`
	// ProcessesUnknown says why the registry could not be read, if so.
	ProcessesUnknown string `json:"processes_unknown,omitempty"`
}

// GetStatus reads the shared consumer's state.
func GetStatus(ctx context.Context, js jetstream.JetStream, n queue.Names) (*Status, error) {
	c, err := js.Consumer(ctx, n.TaskStream, n.Consumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w (has a consumer process started yet?)", n.Consumer, n.TaskStream, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{Stream: n.TaskStream, Consumer: n.Consumer, Pending: info.NumPending, InFlight: info.NumAckPending,
		Redelivered: info.NumRedelivered, Waiting: info.NumWaiting, Paused: info.Paused}
	switch {
	case info.Paused && Indefinite(info.PauseRemaining):
		st.PausedIndefinitely = true
	case info.Paused:
		st.PausedUntil = time.Now().Add(info.PauseRemaining).UTC().Truncate(time.Second)
	}
	if kv, err := js.KeyValue(ctx, BreakerBucket); err == nil {
		if entry, err := kv.Get(ctx, n.Consumer); err == nil {
			// Bounded as the consumers bound it.
			if fs, err := readSharedState(entry, statusMaxCooldown); err == nil {
				st.Breaker, st.BreakerBy = fs.State.String(), fs.Owner
				if fs.State == resilience.StateOpen {
					st.BreakerUntil = fs.Until
				}
			}
		}
	}
	if held, err := queue.ReadHeldSummary(ctx, js, n); err != nil {
		st.DLQRefusingUnknown = err.Error()
	} else {
		st.DLQRefusing = held
	}
	if list, err := ListProcesses(ctx, js, n); err != nil {
		st.ProcessesUnknown = err.Error()
	} else {
		st.Processes, st.ProcessesLeftOut, st.ProcessesMalformed = list.Processes, list.LeftOut, list.Malformed
	}
	if s, err := js.Stream(ctx, n.DLQStream); err == nil {
		if si, err := s.Info(ctx); err == nil {
			st.DeadLetters = si.State.Msgs
			c := si.Config
			// Full: less room left than a 1 MiB record, or than 1% of the stream.
			st.DLQFull = c.MaxBytes > 0 && si.State.Bytes+uint64(min(c.MaxBytes/100, queue.DefaultMaxMsgSize)) >= uint64(c.MaxBytes) ||
				c.MaxMsgs > 0 && si.State.Msgs >= uint64(c.MaxMsgs)
		}
	}
	return st, nil
}
