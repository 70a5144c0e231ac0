package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nodeq/nodeq/internal/queue"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BreakerBucket is the Key-Value bucket holding fleet-wide breaker states,
// one key per durable consumer.
const BreakerBucket = "nodeq_breakers"

// FleetBreaker keeps a circuit breaker's state for a whole fleet of
// consumer processes, with JetStream's own mechanisms: a Key-Value entry
// updated with compare-and-set (so exactly one instance claims the
// half-open probe), and a consumer pause on the server (so every instance
// stops receiving at once, and receives again at the end of the cooldown
// even if the instance that tripped has died). It implements
// resilience.Shared.
type FleetBreaker struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	names queue.Names
	id    string
	log   *slog.Logger
	// ProbeTimeout is how long a claimed probe may go without closing or
	// re-opening the breaker before another instance may claim it (the
	// prober may have died). Default 2 minutes.
	ProbeTimeout time.Duration
	// MaxCooldown bounds how long an entry can keep the breaker open,
	// counted from when the server stored it: the entry is shared state
	// that anyone with write access to the bucket can change, and must not
	// stop the fleet for longer than the breaker itself would. Default 5m.
	MaxCooldown time.Duration
}

// fleetState is the Key-Value entry.
type fleetState struct {
	State string    `json:"state"` // "open", "half-open" or "closed"
	Until time.Time `json:"until,omitzero"`
	Trips int       `json:"trips,omitempty"`
	Owner string    `json:"owner"` // the instance that wrote it
	At    time.Time `json:"at"`
}

// NewFleetBreaker opens (creating if needed) the breaker bucket. id names
// this instance (host/pid).
func NewFleetBreaker(ctx context.Context, js jetstream.JetStream, n queue.Names, id string, log *slog.Logger) (*FleetBreaker, error) {
	var kv jetstream.KeyValue
	err := queue.RetrySetup(ctx, log, "fleet breaker bucket "+BreakerBucket, func(ctx context.Context) error {
		// Several API calls: a denial of any of them fails at once.
		return queue.CallAPI(ctx, js, "", func(ctx context.Context) error {
			var err error
			kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BreakerBucket, Description: "nodeq fleet-wide circuit breakers", History: 1})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return &FleetBreaker{js: js, kv: kv, names: n, id: id, log: log, ProbeTimeout: 2 * time.Minute, MaxCooldown: 5 * time.Minute}, nil
}

// maxTrips bounds the trip count read from an entry.
const maxTrips = 64

// read decodes an entry and bounds it: an unknown state is an error, the
// open period ends at most MaxCooldown after the server stored the entry
// (the server's timestamp, not the writer's), and trips are capped.
func (f *FleetBreaker) read(entry jetstream.KeyValueEntry) (fleetState, error) {
	return readFleetState(entry, f.MaxCooldown)
}

// readFleetState is FleetBreaker.read with a given bound.
func readFleetState(entry jetstream.KeyValueEntry, maxCooldown time.Duration) (fleetState, error) {
	var st fleetState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return st, fmt.Errorf("fleet breaker entry is not JSON: %w", err)
	}
	switch st.State {
	case "open", "half-open", "closed":
	default:
		return st, fmt.Errorf("fleet breaker entry has unknown state %q", st.State)
	}
	if latest := entry.Created().Add(maxCooldown); st.Until.After(latest) {
		st.Until = latest
	}
	st.Trips = min(max(st.Trips, 0), maxTrips)
	return st, nil
}

func (f *FleetBreaker) put(ctx context.Context, st fleetState) error {
	st.Owner, st.At = f.id, time.Now().UTC()
	b, _ := json.Marshal(st)
	_, err := f.kv.Put(ctx, f.names.Consumer, b)
	return err
}

// Trip publishes an open breaker and pauses the consumer until the cooldown ends.
func (f *FleetBreaker) Trip(until time.Time, trips int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.put(ctx, fleetState{State: "open", Until: until, Trips: trips}); err != nil {
		f.log.Error("fleet breaker: could not publish the trip; other consumers keep pulling", "err", err)
	}
	if err := Pause(ctx, f.js, f.names, until); err != nil {
		f.log.Error("fleet breaker: could not pause the consumer on the server", "err", err)
	}
}

// ClaimProbe makes this instance the prober if the entry is open and its
// cooldown is over, or a claimed probe has gone silent, using compare-and-set.
func (f *FleetBreaker) ClaimProbe() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entry, err := f.kv.Get(ctx, f.names.Consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true // nothing shared yet: this instance's own breaker decides
		}
		f.log.Warn("fleet breaker: could not read the shared state; probing from this instance", "err", err)
		return true
	}
	st, err := f.read(entry)
	if err != nil {
		f.log.Warn("fleet breaker: ignoring a malformed shared entry; probing from this instance", "err", err)
		return true
	}
	now := time.Now()
	switch {
	case st.State == "open" && !now.Before(st.Until):
	case st.State == "half-open" && now.Sub(st.At) > f.ProbeTimeout:
		f.log.Warn("fleet breaker: the probe of another instance went silent; taking over", "prober", st.Owner)
	default:
		return false
	}
	st.State, st.Owner, st.At = "half-open", f.id, now.UTC()
	b, _ := json.Marshal(st)
	if _, err := f.kv.Update(ctx, f.names.Consumer, b, entry.Revision()); err != nil {
		return false // another instance claimed it first
	}
	return true
}

// Close publishes that the probe succeeded and resumes the consumer.
func (f *FleetBreaker) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.put(ctx, fleetState{State: "closed"}); err != nil {
		f.log.Error("fleet breaker: could not publish the close", "err", err)
	}
	if err := Resume(ctx, f.js, f.names); err != nil {
		f.log.Warn("fleet breaker: could not resume the consumer", "err", err)
	}
}

// Applier takes remote breaker changes; *resilience.Breaker is one.
type Applier interface {
	Apply(open bool, until time.Time, trips int)
}

// watchSetupTimeout bounds how long Watch waits for the server to set up
// the watch (it creates a consumer on the bucket's stream).
const watchSetupTimeout = 30 * time.Second

// Watch applies every change of the shared entry to b until ctx is done,
// starting with the current value, so that an instance joining during an
// open breaker stays out too. Setting the watch up fails after
// watchSetupTimeout if the server does not answer.
func (f *FleetBreaker) Watch(ctx context.Context, b Applier) error {
	// The watch lives as long as the context it is created with, so that
	// context cannot carry the setup's deadline: wait for the setup apart.
	wctx, stop := context.WithCancel(ctx)
	type watch struct {
		w   jetstream.KeyWatcher
		err error
	}
	ready := make(chan watch, 1)
	go func() {
		w, err := f.kv.Watch(wctx, f.names.Consumer)
		ready <- watch{w, err}
	}()
	timer := time.NewTimer(watchSetupTimeout)
	defer timer.Stop()
	var w jetstream.KeyWatcher
	select {
	case r := <-ready:
		if r.err != nil {
			stop()
			return fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, r.err)
		}
		w = r.w
	case <-timer.C:
		stop() // ends the setup request; a watch it still returns is stopped with wctx
		return fmt.Errorf("watch fleet breaker entry %s: no answer from JetStream within %v", f.names.Consumer, watchSetupTimeout)
	case <-ctx.Done():
		stop()
		return fmt.Errorf("watch fleet breaker entry %s: %w", f.names.Consumer, ctx.Err())
	}
	go func() {
		defer stop()
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil || entry.Operation() != jetstream.KeyValuePut {
					continue
				}
				st, err := f.read(entry)
				if err != nil {
					f.log.Warn("fleet breaker: ignoring a malformed shared entry", "err", err, "revision", entry.Revision())
					continue
				}
				switch st.State {
				case "open":
					b.Apply(true, st.Until, st.Trips)
				case "closed":
					b.Apply(false, time.Time{}, 0)
				}
			}
		}
	}()
	return nil
}
