package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/resilience"
)

// BreakerBucket is the Key-Value bucket holding fleet-wide breaker states,
// one key per durable consumer.
const BreakerBucket = "nodeq_breakers"

// SharedState is the fleet-wide state of a breaker: the JSON value of its
// Key-Value entry, e.g.
//
//	{"state":"open","until":"2026-01-02T03:04:05Z","trips":2,"owner":"host/123","at":"2026-01-02T03:03:55Z"}
type SharedState struct {
	// State is "open", "half-open" (an instance claimed the probe) or "closed".
	State resilience.State `json:"state"`
	// Until is when an open breaker's cooldown ends.
	Until time.Time `json:"until,omitzero"`
	// Trips counts the trips since the breaker last closed.
	Trips int `json:"trips,omitempty"`
	// Owner is the instance that wrote the entry (host/pid).
	Owner string `json:"owner"`
	// At is when it wrote it, by its own clock.
	At time.Time `json:"at"`
}

// UnmarshalJSON reads an entry; one without a state is an error (not a
// closed breaker).
func (s *SharedState) UnmarshalJSON(data []byte) error {
	type plain SharedState
	var v struct {
		plain
		State *resilience.State `json:"state"` // shadows plain.State
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	if v.State == nil {
		return errors.New("no state")
	}
	*s = SharedState(v.plain)
	s.State = *v.State
	return nil
}

// Bounds on what an entry may say: anyone with write access to the bucket
// can write it.
const (
	// maxTrips caps the trips read from an entry.
	maxTrips = 64
	// maxOwnerLen caps the owner read from an entry (it is logged).
	maxOwnerLen = 256
	// statusMaxCooldown bounds the open period GetStatus shows, as the
	// consumers bound it with a generous breaker.max_cooldown.
	statusMaxCooldown = 5 * time.Minute
)

// readSharedState decodes an entry and bounds it: an unreadable entry or
// an unknown state is an error, the open period ends at most maxCooldown
// after the server stored the entry (the server's timestamp, not the
// writer's), trips are capped and the owner clipped.
func readSharedState(entry jetstream.KeyValueEntry, maxCooldown time.Duration) (SharedState, error) {
	var st SharedState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return SharedState{}, fmt.Errorf("fleet breaker entry %s (revision %d) is not a breaker state: %w", entry.Key(), entry.Revision(), err)
	}
	if latest := entry.Created().Add(maxCooldown); st.Until.After(latest) {
		st.Until = latest
	}
	st.Trips = min(max(st.Trips, 0), maxTrips)
	if len(st.Owner) > maxOwnerLen {
		st.Owner = strings.ToValidUTF8(st.Owner[:maxOwnerLen], "")
	}
	return st, nil
}
