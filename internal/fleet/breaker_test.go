package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// fleetEnv is one embedded nats-server with nodeq's streams and durable
// consumer, shared by the members of a fleet.
type fleetEnv struct {
	srv   *server.Server
	js    jetstream.JetStream
	names queue.Names
	cons  jetstream.Consumer
}

func newFleetEnv(t *testing.T) *fleetEnv {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	ctx := context.Background()
	if err := queue.EnsureStreams(ctx, js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fleetEnv{srv: srv, js: js, names: names, cons: cons}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("NODEQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// member is one process of the fleet: its own connection, local breaker
// (tripped by one failure) and layer. watch says whether it watches the
// shared entry.
func (e *fleetEnv) member(t *testing.T, id string, s resilience.BreakerSettings, watch bool, opts ...Option) *Breaker {
	t.Helper()
	_, js := natstest.Connect(t, e.srv)
	s.Name = id
	if s.ReadyToTrip == nil {
		s.ReadyToTrip = resilience.ConsecutiveFailures(1)
	}
	local := resilience.NewBreaker(s)
	f, err := NewBreaker(context.Background(), js, e.names, id, local, append([]Option{WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if watch {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if err := f.Watch(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// entry reads the shared entry as stored, unbounded.
func (e *fleetEnv) entry(t *testing.T) (SharedState, jetstream.KeyValueEntry) {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), BreakerBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), e.names.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	var st SharedState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		t.Fatalf("entry %s: %v", entry.Value(), err)
	}
	return st, entry
}

// put writes the shared entry by hand, as `nats kv put` would, and
// returns it as stored.
func (e *fleetEnv) put(t *testing.T, value string) jetstream.KeyValueEntry {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), BreakerBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), e.names.Consumer, []byte(value)); err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), e.names.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	return entry
}

func (e *fleetEnv) paused(t *testing.T) bool {
	t.Helper()
	info, err := e.cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.Paused
}

// trip fails one task on f, whose local breaker trips on one failure.
func trip(t *testing.T, f *Breaker) {
	t.Helper()
	report, _, ok := f.TryAcquire()
	if !ok {
		t.Fatalf("%s: no task may run (%v)", f.Name(), f.State())
	}
	report(resilience.OutcomeFailure)
	if s := f.State(); s != resilience.StateOpen {
		t.Fatalf("%s: %v after a failure", f.Name(), s)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blocked reports whether Allowance and Acquire both wait for d, and
// TryAcquire refuses: nothing is pulled or started.
func blocked(f *Breaker, d time.Duration) bool {
	if _, _, ok := f.TryAcquire(); ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, err := f.Allowance(ctx); !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), d)
	defer cancel2()
	_, err := f.Acquire(ctx2)
	return errors.Is(err, context.DeadlineExceeded)
}

// A trip of one member opens the others and pauses the consumer on the
// server; the members that take it do not publish it again.
func TestTripOpensTheFleet(t *testing.T) {
	e := newFleetEnv(t)
	settings := resilience.BreakerSettings{Cooldown: 3 * time.Second, MaxCooldown: 10 * time.Second}
	a := e.member(t, "a", settings, true)
	b := e.member(t, "b", settings, true)

	trip(t, a)
	// The trip is stored and the consumer paused before the failure's report returns.
	st, entry := e.entry(t)
	if st.State != resilience.StateOpen || st.Owner != "a" || st.Trips != 1 || !st.Until.Equal(a.Local().Snapshot().Until) {
		t.Fatalf("shared entry %s; a open until %v", entry.Value(), a.Local().Snapshot().Until)
	}
	if !strings.Contains(string(entry.Value()), `"state":"open"`) {
		t.Fatalf("entry %s: the state is not written as text", entry.Value())
	}
	if !e.paused(t) {
		t.Fatal("the consumer is not paused on the server")
	}
	eventually(t, 2*time.Second, "b to take a's trip", func() bool { return b.State() == resilience.StateOpen })
	if u := b.Local().Snapshot().Until; !u.Equal(st.Until) {
		t.Fatalf("b open until %v, the fleet until %v", u, st.Until)
	}
	if !blocked(b, 100*time.Millisecond) {
		t.Fatal("b lets tasks be pulled or run while the fleet is open")
	}

	// A member that takes the entry does not write it again (no echo):
	// c applies it synchronously, then the entry is unchanged.
	c := e.member(t, "c", settings, false)
	c.apply(entry)
	if c.State() != resilience.StateOpen {
		t.Fatalf("c is %v after applying the open entry", c.State())
	}
	if _, now := e.entry(t); now.Revision() != entry.Revision() {
		st, _ := e.entry(t)
		t.Fatalf("the entry was written again by %s (revision %d -> %d)", st.Owner, entry.Revision(), now.Revision())
	}
}

// tripped starts two watching members and trips the fleet from a.
func tripped(t *testing.T, e *fleetEnv, s resilience.BreakerSettings, opts ...Option) (a, b *Breaker) {
	t.Helper()
	a = e.member(t, "a", s, true, opts...)
	b = e.member(t, "b", s, true, opts...)
	trip(t, a)
	eventually(t, 2*time.Second, "b to take a's trip", func() bool { return b.State() == resilience.StateOpen })
	return a, b
}

// race has every member ask to pull when the cooldown ends, as their
// pullers do, and returns the one allowed to (the winner of the claim)
// and the other.
func race(t *testing.T, e *fleetEnv, members ...*Breaker) (winner, loser *Breaker) {
	t.Helper()
	type answer struct {
		f *Breaker
		n int
	}
	answers := make(chan answer, len(members))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range members {
		wg.Go(func() {
			n, err := f.Allowance(ctx)
			if err == nil {
				answers <- answer{f, n}
			}
		})
	}
	first := <-answers
	if first.n != 1 {
		t.Fatalf("%s: half-open allowance %d, want 1", first.f.Name(), first.n)
	}
	for _, f := range members {
		if f != first.f {
			loser = f
		}
	}
	// The loser keeps waiting: give its claim time to be answered.
	if !blocked(loser, 300*time.Millisecond) {
		t.Fatalf("%s may pull or run while %s probes", loser.Name(), first.f.Name())
	}
	cancel()
	wg.Wait()
	if len(answers) != 0 {
		t.Fatalf("both members were allowed to pull the probe")
	}
	st, entry := e.entry(t)
	if st.State != resilience.StateHalfOpen || st.Owner != first.f.Name() {
		t.Fatalf("after the claim: entry %s, want half-open by %s", entry.Value(), first.f.Name())
	}
	return first.f, loser
}

// After the cooldown exactly one member claims the probe; the other
// neither pulls nor runs a task. The probe's success is stored before the
// prober runs anything else, closes both and resumes the consumer.
func TestOneProbeClosesTheFleet(t *testing.T) {
	e := newFleetEnv(t)
	a, b := tripped(t, e, resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second})
	winner, loser := race(t, e, a, b)

	report, probe, ok := winner.TryAcquire()
	if !ok || !probe {
		t.Fatalf("the winner's task: ok %v, probe %v", ok, probe)
	}
	if _, _, ok := winner.TryAcquire(); ok {
		t.Fatal("a second task may run while the probe runs")
	}
	// When the prober's breaker closes (and so may run the next task), the
	// fleet's close must already be stored.
	var mu sync.Mutex
	var atClose string
	winner.Listen(func(_ string, _, to resilience.State) {
		if to == resilience.StateClosed {
			st, _ := e.entry(t)
			mu.Lock()
			atClose = st.State.String()
			mu.Unlock()
		}
	})
	waiting := make(chan int, 1)
	go func() {
		n, _ := loser.Allowance(context.Background())
		waiting <- n
	}()
	report(resilience.OutcomeSuccess)
	mu.Lock()
	if atClose != "closed" {
		t.Fatalf("the prober closed while the shared entry was %q", atClose)
	}
	mu.Unlock()
	if st, entry := e.entry(t); st.State != resilience.StateClosed || st.Owner != winner.Name() {
		t.Fatalf("after the probe: entry %s", entry.Value())
	}
	if e.paused(t) {
		t.Fatal("the consumer is still paused after the close")
	}
	select {
	case n := <-waiting:
		if n != math.MaxInt {
			t.Fatalf("the loser's pull after the close: allowance %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the loser did not resume pulling after the close")
	}
	if s := loser.State(); s != resilience.StateClosed {
		t.Fatalf("loser %v after the close", s)
	}
}

// A failed probe reopens every member, with the doubled cooldown's trips.
func TestProbeFailureReopensTheFleet(t *testing.T) {
	e := newFleetEnv(t)
	a, b := tripped(t, e, resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second})
	winner, loser := race(t, e, a, b)
	report, probe, ok := winner.TryAcquire()
	if !ok || !probe {
		t.Fatalf("the winner's task: ok %v, probe %v", ok, probe)
	}
	report(resilience.OutcomeFailure)
	st, entry := e.entry(t)
	if st.State != resilience.StateOpen || st.Owner != winner.Name() || st.Trips != 2 || !st.Until.Equal(winner.Local().Snapshot().Until) {
		t.Fatalf("after the failed probe: entry %s", entry.Value())
	}
	if !e.paused(t) {
		t.Fatal("the consumer is not paused again")
	}
	eventually(t, 2*time.Second, "the loser to reopen", func() bool { return loser.State() == resilience.StateOpen })
	if snap := loser.Local().Snapshot(); snap.Trips != 2 || !snap.Until.Equal(st.Until) {
		t.Fatalf("loser %+v, fleet until %v", snap, st.Until)
	}
	if !blocked(loser, 100*time.Millisecond) || !blocked(winner, 100*time.Millisecond) {
		t.Fatal("a member lets tasks be pulled or run after the failed probe")
	}
}

// A claimed probe that stays silent for ProbeTimeout (by the server's
// timestamp of the claim) is taken over; the silent prober's late report
// changes nothing.
func TestSilentProberIsTakenOver(t *testing.T) {
	e := newFleetEnv(t)
	const probeTimeout = 2 * time.Second
	a, b := tripped(t, e, resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}, WithProbeTimeout(probeTimeout))
	winner, loser := race(t, e, a, b)
	_, claim := e.entry(t)
	silent, probe, ok := winner.TryAcquire() // runs, and tells nobody
	if !ok || !probe {
		t.Fatalf("the winner's task: ok %v, probe %v", ok, probe)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n, err := loser.Allowance(ctx); err != nil || n != 1 {
		t.Fatalf("the loser did not take over: allowance %d, %v", n, err)
	}
	if waited := time.Since(claim.Created()); waited < probeTimeout-100*time.Millisecond {
		t.Fatalf("the loser took over %v after the claim was stored, before the probe timeout %v", waited, probeTimeout)
	}
	if st, entry := e.entry(t); st.State != resilience.StateHalfOpen || st.Owner != loser.Name() {
		t.Fatalf("after the takeover: entry %s", entry.Value())
	}
	report, probe, ok := loser.TryAcquire()
	if !ok || !probe {
		t.Fatalf("the taking-over task: ok %v, probe %v", ok, probe)
	}
	report(resilience.OutcomeSuccess)
	eventually(t, 2*time.Second, "the silent prober to close", func() bool { return winner.State() == resilience.StateClosed })
	_, before := e.entry(t)
	silent(resilience.OutcomeSuccess) // too late: a stale probe publishes nothing
	if st, after := e.entry(t); after.Revision() != before.Revision() || st.Owner != loser.Name() {
		t.Fatalf("the stale probe wrote the entry: %s", after.Value())
	}
}

// Entries anyone with write access to the bucket could write are bounded:
// malformed ones and unknown states are ignored, an open period ends at
// most MaxCooldown after the server stored it, trips are capped, and a
// claim from the far future is taken over after the probe timeout.
func TestHostileEntriesAreBounded(t *testing.T) {
	e := newFleetEnv(t)
	const maxCooldown = 2 * time.Second
	f := e.member(t, "b", resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: maxCooldown}, true, WithProbeTimeout(2*time.Second))
	var mu sync.Mutex
	var changes []string
	f.Listen(func(_ string, from, to resilience.State) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, from.String()+"->"+to.String())
	})
	for _, bad := range []string{
		``, `not json`, `{}`, `{"state":null}`, `{"state":""}`, `{"state":"opened-forever","until":"2100-01-01T00:00:00Z"}`,
		`{"state":"OPEN"}`, `{"state":"open","trips":"many"}`, `{"state":"open","trips":1e30}`, `[1,2]`,
		`{"state":"open\u0000","until":"2100-01-01T00:00:00Z"}`, `{"state":"` + strings.Repeat("x", 100_000) + `"}`,
	} {
		entry := e.put(t, bad)
		if _, err := readSharedState(entry, maxCooldown); err == nil {
			t.Errorf("entry %.40q was read", bad)
		}
		f.apply(entry)
		if s := f.State(); s != resilience.StateClosed {
			t.Fatalf("entry %.40q moved the breaker to %v", bad, s)
		}
	}
	// The watch got them all too, in order: once it has applied a good
	// entry after them, the only change must be that one.
	sentinel, _ := json.Marshal(SharedState{State: resilience.StateOpen, Until: time.Now().Add(time.Second), Trips: 1, Owner: "sentinel"})
	e.put(t, string(sentinel))
	eventually(t, 5*time.Second, "the watch to apply the good entry", func() bool { return f.State() != resilience.StateClosed })
	mu.Lock()
	if fmt.Sprint(changes) != "[closed->open]" {
		t.Fatalf("changes through the watch: %v, want only the good entry's", changes)
	}
	mu.Unlock()

	owner := strings.Repeat("m", 1000) + "\x1b[2J"
	forged, _ := json.Marshal(map[string]any{"state": "open", "until": "2100-01-01T00:00:00Z", "trips": 999999, "owner": owner})
	entry := e.put(t, string(forged))
	st, err := readSharedState(entry, maxCooldown)
	if err != nil || !st.Until.Equal(entry.Created().Add(maxCooldown)) || st.Trips != maxTrips || len(st.Owner) > maxOwnerLen {
		t.Fatalf("forged open read as %+v, %v", st, err)
	}
	f.apply(entry)
	snap := f.Local().Snapshot()
	if snap.State != resilience.StateOpen || snap.Until.After(entry.Created().Add(maxCooldown)) || snap.Trips != maxTrips {
		t.Fatalf("after the forged open: %+v (stored %v)", snap, entry.Created())
	}
	// The probe is claimed (from the forged entry) once the bound passed.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if n, err := f.Allowance(ctx); err != nil || n != 1 {
		t.Fatalf("the forged open held the breaker: %d, %v", n, err)
	}
	report, probe, ok := f.TryAcquire()
	if !ok || !probe {
		t.Fatalf("the probe: ok %v, probe %v", ok, probe)
	}
	report(resilience.OutcomeFailure) // reopens, and overwrites the forged entry

	// A claim dated 2100 by its writer is timed by the server's clock.
	entry = e.put(t, `{"state":"half-open","until":"2000-01-01T00:00:00Z","owner":"mallory","at":"2100-01-01T00:00:00Z"}`)
	stored := entry.Created()
	if n, err := f.Allowance(ctx); err != nil || n != 1 {
		t.Fatalf("a claim from the future held the breaker: %d, %v", n, err)
	}
	if since := time.Since(stored); since < 2*time.Second-100*time.Millisecond {
		t.Fatalf("the claim was taken over %v after it was stored, before the probe timeout", since)
	}
	if st, entry := e.entry(t); st.State != resilience.StateHalfOpen || st.Owner != "b" {
		t.Fatalf("after the takeover: %s", entry.Value())
	}
}

// With no entry, a closed one or an unreadable one, the fleet is not open:
// the member's own breaker decides and it probes.
func TestClaimWithoutFleetState(t *testing.T) {
	e := newFleetEnv(t)
	f := e.member(t, "solo", resilience.BreakerSettings{Cooldown: 200 * time.Millisecond}, false)
	for _, entry := range []string{"", `{"state":"closed","owner":"other"}`, `garbage`} {
		if entry != "" {
			e.put(t, entry)
		}
		f.Local().Apply(true, time.Now().Add(200*time.Millisecond), 1) // as if its trip had not been stored
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := f.Allowance(ctx)
		cancel()
		if err != nil || n != 1 {
			t.Fatalf("entry %q: allowance %d, %v", entry, n, err)
		}
		report, probe, ok := f.TryAcquire()
		if !ok || !probe {
			t.Fatalf("entry %q: ok %v, probe %v", entry, ok, probe)
		}
		report(resilience.OutcomeSuccess)
		if st, stored := e.entry(t); st.State != resilience.StateClosed || st.Owner != "solo" || f.State() != resilience.StateClosed {
			t.Fatalf("entry %q: after the probe %s, %v", entry, stored.Value(), f.State())
		}
	}
}

func TestSharedStateJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		st   SharedState
		want string
	}{
		{SharedState{State: resilience.StateOpen, Until: at.Add(time.Minute), Trips: 2, Owner: "h/1", At: at},
			`{"state":"open","until":"2026-01-02T03:05:05Z","trips":2,"owner":"h/1","at":"2026-01-02T03:04:05Z"}`},
		{SharedState{State: resilience.StateHalfOpen, Until: at, Trips: 1, Owner: "h/2", At: at},
			`{"state":"half-open","until":"2026-01-02T03:04:05Z","trips":1,"owner":"h/2","at":"2026-01-02T03:04:05Z"}`},
		{SharedState{State: resilience.StateClosed, Owner: "h/1", At: at},
			`{"state":"closed","owner":"h/1","at":"2026-01-02T03:04:05Z"}`},
	} {
		b, err := json.Marshal(c.st)
		if err != nil || string(b) != c.want {
			t.Fatalf("marshal %+v: %s, %v; want %s", c.st, b, err, c.want)
		}
		var back SharedState
		if err := json.Unmarshal(b, &back); err != nil || back != c.st {
			t.Fatalf("unmarshal %s: %+v, %v", b, back, err)
		}
	}
	if err := json.Unmarshal([]byte(`{"until":"2026-01-02T03:04:05Z"}`), &SharedState{}); err == nil {
		t.Fatal("an entry without a state was read")
	}
}

// A member skips its own entries: they tell what its breaker did already
// (one delivered late would undo what it did since). Others' it applies.
func TestOwnEntriesAreSkipped(t *testing.T) {
	e := newFleetEnv(t)
	a := e.member(t, "a", resilience.BreakerSettings{Cooldown: time.Minute}, false)
	trip(t, a)
	a.apply(e.put(t, `{"state":"closed","owner":"a"}`))
	if s := a.State(); s != resilience.StateOpen {
		t.Fatalf("its own entry moved a to %v", s)
	}
	a.apply(e.put(t, `{"state":"closed","owner":"z"}`))
	if s := a.State(); s != resilience.StateClosed {
		t.Fatalf("another's close left a %v", s)
	}
}
