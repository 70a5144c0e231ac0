package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// ctlProcess is one consumer process following the control channel:
// what it was told, in order.
type ctlProcess struct {
	mu     sync.Mutex
	orders []Order
}

func (p *ctlProcess) act(o Order) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.orders = append(p.orders, o)
}

func (p *ctlProcess) told() []Order {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Order(nil), p.orders...)
}

// follow starts a process known by ids following the commands, on its own
// connection, until the test ends.
func (e *fleetEnv) follow(t *testing.T, ids ...string) *ctlProcess {
	t.Helper()
	_, js := natstest.Connect(t, e.srv)
	p := &ctlProcess{}
	stop, err := WatchControl(context.Background(), js, e.names, ids, p.act, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return p
}

// send writes a command as producer breaker does.
func (e *fleetEnv) send(t *testing.T, process string, c Command) Command {
	t.Helper()
	if c.By == "" {
		c.By = "tester@ci"
	}
	sent, key, err := SendCommand(context.Background(), e.js, e.names, process, c)
	if err != nil {
		t.Fatal(err)
	}
	if key != ControlKey(e.names, process) || sent.ID == "" || sent.At.IsZero() {
		t.Fatalf("sent %+v as %s", sent, key)
	}
	return sent
}

// putRaw writes a control entry by hand, as `nats kv put` would.
func (e *fleetEnv) putRaw(t *testing.T, process, value string) {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), ControlBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), ControlKey(e.names, process), []byte(value)); err != nil {
		t.Fatal(err)
	}
}

// waitTold waits until p was told n commands and returns them.
func waitTold(t *testing.T, p *ctlProcess, n int, what string) []Order {
	t.Helper()
	eventually(t, 10*time.Second, what, func() bool { return len(p.told()) >= n })
	got := p.told()
	if len(got) != n {
		t.Fatalf("%s: told %d commands, want %d: %+v", what, len(got), n, got)
	}
	return got
}

func openFor(d time.Duration, reason string) Command {
	return Command{Op: OpOpen, Until: time.Now().Add(d), Reason: reason}
}

// A command for one process reaches it only; one for every process
// reaches them all, once each, in the order they were written.
func TestCommandReachesItsTargets(t *testing.T) {
	e := newFleetEnv(t)
	e.send(t, "", Command{Op: OpClose, Reason: "create the bucket"}) // before the processes start: not in force
	a, b, c := e.follow(t, "h/1", "h/1/a1b2c3d4"), e.follow(t, "h/2"), e.follow(t, "h/3")

	start := time.Now()
	toA := e.send(t, "h/1/a1b2c3d4", openFor(time.Hour, "a only")) // by its fleet name
	toAll := e.send(t, "", Command{Op: OpClose, Reason: "everyone"})
	got := waitTold(t, a, 2, "a to be told both")
	t.Logf("a told both within %v", time.Since(start))
	if got[0].ID != toA.ID || got[0].Fleet || got[0].Op != OpOpen || !got[0].Until.Equal(toA.Until) || got[0].By != "tester@ci" || got[0].Reason != "a only" {
		t.Fatalf("a was told %+v first, want %+v for it alone", got[0], toA)
	}
	if got[1].ID != toAll.ID || !got[1].Fleet {
		t.Fatalf("a was told %+v second, want %+v for every process", got[1], toAll)
	}
	for name, p := range map[string]*ctlProcess{"b": b, "c": c} {
		// The command for a came first: had it reached b or c, it would be told before the one for all.
		if got := waitTold(t, p, 1, name+" to be told the command for all"); got[0].ID != toAll.ID {
			t.Fatalf("%s was told %+v, want only %s", name, got[0], toAll.ID)
		}
	}
	e.send(t, "h/2", Command{Op: OpClose, Reason: "b only"})
	if got := waitTold(t, b, 2, "b to be told its own"); got[1].Reason != "b only" || got[1].Fleet {
		t.Fatalf("b was told %+v", got[1])
	}
	if n := len(c.told()); n != 1 {
		t.Fatalf("c was told %d commands, want 1", n)
	}
}

// A process that starts while a manual open is in force is told it
// before WatchControl returns; one that starts after the open ended, or
// after a close that followed it, is told nothing.
func TestStarterTakesOnlyAnOpenInForce(t *testing.T) {
	e := newFleetEnv(t)
	open := e.send(t, "", openFor(time.Hour, "maintenance"))
	early := e.follow(t, "h/1")
	if got := early.told(); len(got) != 1 || got[0].ID != open.ID || !got[0].Fleet {
		t.Fatalf("a process starting during the open was told %+v before WatchControl returned, want %s", got, open.ID)
	}

	// A later close for one process: it starts closed; the others still open.
	e.send(t, "h/2", Command{Op: OpClose})
	if got := e.follow(t, "h/2").told(); len(got) != 0 {
		t.Fatalf("a process whose latest command is a close was told %+v", got)
	}
	if got := e.follow(t, "h/3").told(); len(got) != 1 || got[0].ID != open.ID {
		t.Fatalf("another process was told %+v, want the open", got)
	}

	// An open that ended: written by hand, as SendCommand refuses it.
	e.putRaw(t, "h/4", fmt.Sprintf(`{"op":"open","until":%q,"by":"x","id":"past"}`, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)))
	late := e.follow(t, "h/4")
	if got := late.told(); len(got) != 0 {
		t.Fatalf("a process was told an open that ended: %+v", got)
	}
	// Live, too: an ended open is ignored, and the next command is acted on.
	e.putRaw(t, "h/4", fmt.Sprintf(`{"op":"open","until":%q,"by":"x","id":"past-2"}`, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)))
	next := e.send(t, "h/4", Command{Op: OpClose})
	if got := waitTold(t, late, 1, "the close after an ended open"); got[0].ID != next.ID {
		t.Fatalf("told %+v, want only %s", got, next.ID)
	}
}

// Hostile entries are ignored with a warning or bounded; none stops the
// process from acting on the next command, and a command written twice
// is acted on once.
func TestHostileCommands(t *testing.T) {
	e := newFleetEnv(t)
	e.send(t, "", Command{Op: OpClose}) // creates the bucket, with its size limit
	p := e.follow(t, "h/1")
	for _, v := range []string{
		"garbage\x00\xff",
		`{"op":"explode","by":"x","id":"h1"}`,
		`{"op":"open","by":"x","id":"h2"}`, // no until
		`[1,2,3]`,
		``,
	} {
		e.putRaw(t, "h/1", v)
	}
	kv, err := e.js.KeyValue(context.Background(), ControlBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), ControlKey(e.names, "h/1"), []byte(strings.Repeat("x", MaxCommandValue+1))); err == nil {
		t.Fatal("the bucket took a value larger than MaxCommandValue")
	}
	far := `{"op":"open","until":"9999-12-31T23:59:59Z","by":"eve\u001b[2J","reason":"\u202eevil","id":"far"}`
	e.putRaw(t, "h/1", far)
	e.putRaw(t, "h/1", far) // the same command again: acted on once
	last := e.send(t, "h/1", Command{Op: OpClose, Reason: "after the junk"})
	got := waitTold(t, p, 2, "the bounded open and the close")
	o := got[0]
	if o.ID != "far" || o.Until.After(time.Now().Add(MaxManualOpen)) || o.Until.Before(time.Now().Add(MaxManualOpen-time.Minute)) {
		t.Fatalf("year 9999 taken as %+v, want until about %v from now", o, MaxManualOpen)
	}
	if o.By != `eve\x1b[2J` || o.Reason != `\u202eevil` {
		t.Fatalf("by %q, reason %q: not escaped", o.By, o.Reason)
	}
	if got[1].ID != last.ID {
		t.Fatalf("then told %+v, want %s", got[1], last.ID)
	}
}

// With no bucket yet, WatchControl returns at once and follows the
// bucket that the first command creates, acting on it within a second or two.
func TestFirstCommandCreatesTheBucket(t *testing.T) {
	e := newFleetEnv(t)
	p := e.follow(t, "h/1")
	start := time.Now()
	sent := e.send(t, "", openFor(time.Hour, "first ever"))
	t.Logf("creating the bucket and writing the command took %v", time.Since(start))
	got := waitTold(t, p, 1, "the first command")
	if got[0].ID != sent.ID {
		t.Fatalf("told %+v", got[0])
	}
	t.Logf("the first command was acted on %v after the server stored it", time.Since(got[0].Stored))
	info, err := e.js.KeyValue(context.Background(), ControlBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.TTL() != ControlMaxAge {
		t.Fatalf("bucket: history %d, TTL %v; want 1, %v", st.History(), st.TTL(), ControlMaxAge)
	}
}

// A user the server refuses the bucket gets an error at once, not a
// watch that retries in a loop of violations.
func TestControlRefused(t *testing.T) {
	srv := natstest.ServerWith(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "c", Password: "p", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.STREAM.INFO.NODEQ_TASKS"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}}
	})
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("c", "p"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop, err := WatchControl(context.Background(), js, queue.DefaultNames(), []string{"h/1"}, func(Order) {}, testLogger(t))
	if err == nil {
		stop()
		t.Fatal("no error from a refused bucket")
	}
	if !errors.Is(err, nats.ErrPermissionViolation) || time.Since(start) > 2*time.Second {
		t.Fatalf("after %v: %v; want a permissions violation at once", time.Since(start), err)
	}
}

// Through the fleet's layer, a manual open forces this member open,
// stores the open in the shared entry and pauses the consumer on the
// server until then; the other members take it. A reset closes them all
// and resumes.
func TestForceOpenThroughTheFleet(t *testing.T) {
	e := newFleetEnv(t)
	s := resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}
	a, b := e.member(t, "a", s, true), e.member(t, "b", s, true)
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := a.ForceOpen(context.Background(), until); err != nil {
		t.Fatal(err)
	}
	if snap := a.Local().Snapshot(); snap.State != resilience.StateOpen || !snap.Forced || !snap.Until.Equal(until) {
		t.Fatalf("a after ForceOpen: %+v", snap)
	}
	st, _ := e.entry(t)
	if st.State != resilience.StateOpen || !st.Until.Equal(until) || st.Owner != "a" {
		t.Fatalf("shared entry after ForceOpen: %+v", st)
	}
	if !e.paused(t) {
		t.Fatal("the consumer is not paused on the server")
	}
	eventually(t, 5*time.Second, "b to take the open", func() bool { return b.State() == resilience.StateOpen })
	if !blocked(a, 200*time.Millisecond) {
		t.Fatal("a lets tasks run while forced open")
	}

	if err := a.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := a.State(); s != resilience.StateClosed {
		t.Fatalf("a after Reset: %v", s)
	}
	if st, _ := e.entry(t); st.State != resilience.StateClosed {
		t.Fatalf("shared entry after Reset: %+v", st)
	}
	if e.paused(t) {
		t.Fatal("the consumer is still paused on the server")
	}
	eventually(t, 5*time.Second, "b to close", func() bool { return b.State() == resilience.StateClosed })
}

// A member forced open by a command of its own keeps out whatever the
// fleet's entry says, until its time.
func TestForcedMemberIgnoresTheFleet(t *testing.T) {
	e := newFleetEnv(t)
	s := resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}
	a, b, c := e.member(t, "a", s, true), e.member(t, "b", s, true), e.member(t, "c", s, true)
	b.Local().ForceOpen(time.Now().Add(time.Hour)) // a command for b alone acts on its local breaker
	trip(t, a)
	eventually(t, 5*time.Second, "c to take the trip", func() bool { return c.State() == resilience.StateOpen })
	if err := a.Reset(context.Background()); err != nil { // and the fleet closes again
		t.Fatal(err)
	}
	// c, watching as b does, shows that the close was delivered.
	eventually(t, 5*time.Second, "c to take the close", func() bool { return c.State() == resilience.StateClosed })
	if snap := b.Local().Snapshot(); snap.State != resilience.StateOpen || !snap.Forced {
		t.Fatalf("b after the fleet's close: %+v, want still forced open", snap)
	}
}

// An operator's pause (producer pause, until resumed) outlives a manual
// open and its close: neither shortens it nor ends it.
func TestManualOpenKeepsAnOperatorsPause(t *testing.T) {
	e := newFleetEnv(t)
	s := resilience.BreakerSettings{Cooldown: time.Second, MaxCooldown: 10 * time.Second}
	a := e.member(t, "a", s, true)
	ctx := context.Background()
	if err := Pause(ctx, e.js, e.names, time.Now().Add(Forever)); err != nil {
		t.Fatal(err)
	}
	remaining := func() time.Duration {
		t.Helper()
		c, err := e.js.Consumer(ctx, e.names.TaskStream, e.names.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		if ci := c.CachedInfo(); ci.Paused {
			return ci.PauseRemaining
		}
		return 0
	}
	if err := a.ForceOpen(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r := remaining(); r < 365*24*time.Hour {
		t.Fatalf("after a 1h manual open the operator's pause ends in %v", r)
	}
	if err := a.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if r := remaining(); r < 365*24*time.Hour {
		t.Fatalf("after a manual close the operator's pause ends in %v, want it kept", r)
	}
}
