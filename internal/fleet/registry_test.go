package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// announced is a process's snapshot that a test changes while it runs.
type announced struct {
	mu    sync.Mutex
	p     ProcessInfo
	calls atomic.Int64
}

func (a *announced) set(f func(*ProcessInfo)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(&a.p)
}

func (a *announced) snapshot() ProcessInfo {
	a.calls.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.p
}

// announce runs an Announcer of id on its own connection until the
// returned stop is called (which waits for Run to return).
func (e *fleetEnv) announce(t *testing.T, id string, a *announced, opts ...AnnounceOption) (*Announcer, *nats.Conn, func()) {
	t.Helper()
	nc, js := natstest.Connect(t, e.srv)
	an, err := NewAnnouncer(js, e.names, id, a.snapshot, append([]AnnounceOption{WithAnnounceLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		an.Run(ctx)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return an, nc, stop
}

func (e *fleetEnv) list(t *testing.T) ProcessList {
	t.Helper()
	l, err := ListProcesses(context.Background(), e.js, e.names)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// createBucket creates the registry's bucket as an operator might: with
// its own TTL, and without the value size limit when maxValue is -1.
func (e *fleetEnv) createBucket(t *testing.T, ttl time.Duration, maxValue int32) jetstream.KeyValue {
	t.Helper()
	cfg := processBucketConfig(ttl, 1)
	cfg.MaxValueSize = maxValue
	kv, err := e.js.CreateKeyValue(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// An announced process is listed with what its snapshot says, a change
// is written at once, and a clean stop removes the entry.
func TestAnnouncePutListDelete(t *testing.T) {
	e := newFleetEnv(t)
	started := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	a := &announced{p: ProcessInfo{Host: "vm", PID: 42, Version: "1.2.3", Started: started, NodeTypes: []string{"echo", "sleep"},
		Workers: 4, Prefetch: 2, Breaker: ProcessBreaker{Scope: "process", State: "closed", Since: started}}}
	an, _, stop := e.announce(t, "vm/42/abc", a, WithRefresh(time.Hour)) // only the first write and Changed
	var p ProcessInfo
	eventually(t, 5*time.Second, "the process to be listed", func() bool {
		l := e.list(t)
		if len(l.Processes) == 1 {
			p = l.Processes[0]
		}
		return len(l.Processes) == 1
	})
	if p.ID != "vm/42/abc" || p.Host != "vm" || p.PID != 42 || p.Version != "1.2.3" || !p.Started.Equal(started) ||
		strings.Join(p.NodeTypes, ",") != "echo,sleep" || p.Workers != 4 || p.Prefetch != 2 || p.Stream != e.names.TaskStream ||
		p.Consumer != e.names.Consumer || p.Breaker.State != "closed" || p.Paused || time.Since(p.LastSeen) > 5*time.Second {
		t.Fatalf("listed %+v", p)
	}

	// A breaker transition is written at once, not at the next refresh.
	opened := time.Now().UTC()
	a.set(func(p *ProcessInfo) {
		p.Breaker.State, p.Breaker.Since, p.Breaker.Until, p.Paused, p.InFlight = "open", opened, opened.Add(5*time.Second), true, 3
	})
	an.Changed()
	eventually(t, 5*time.Second, "the change to be written", func() bool {
		l := e.list(t)
		return len(l.Processes) == 1 && l.Processes[0].Breaker.State == "open" && l.Processes[0].Paused && l.Processes[0].InFlight == 3
	})

	stop()
	if l := e.list(t); len(l.Processes) != 0 || l.Malformed != 0 || l.LeftOut != 0 {
		t.Fatalf("after a clean stop: %+v", l)
	}
}

// Changed asks for a write, but a flood of them writes a few times only.
func TestAnnounceChangedIsPaced(t *testing.T) {
	e := newFleetEnv(t)
	a := &announced{p: ProcessInfo{Version: "v"}}
	an, _, stop := e.announce(t, "p", a, WithRefresh(time.Hour))
	eventually(t, 5*time.Second, "the first write", func() bool { return a.calls.Load() == 1 })
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		an.Changed()
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	// Over elapsed, one write per minAnnounceGap at most, plus the first,
	// one pending at the end and one racing the stop.
	if most := 3 + int64(elapsed/minAnnounceGap); a.calls.Load() > most || a.calls.Load() < 2 {
		t.Fatalf("%d writes in %v of Changed; want 2 to %d", a.calls.Load(), elapsed, most)
	}
}

// A process that dies (no clean stop: its connection is gone) drops out
// by itself: the bucket's TTL.
func TestDeadProcessDropsOut(t *testing.T) {
	e := newFleetEnv(t)
	// A TTL of 3s, the live process refreshed every 200ms: a write held
	// up for seconds on a loaded machine does not make it look dead.
	e.createBucket(t, 3*time.Second, MaxProcessValue)
	a := &announced{p: ProcessInfo{Version: "v"}}
	_, nc, _ := e.announce(t, "dies", a) // refresh: a third of the TTL
	b := &announced{p: ProcessInfo{Version: "v"}}
	e.announce(t, "lives", b, WithRefresh(200*time.Millisecond))
	eventually(t, 5*time.Second, "both processes to be listed", func() bool { return len(e.list(t).Processes) == 2 })
	killed := time.Now()
	nc.Close() // as SIGKILL: nothing more is written, nothing removed
	eventually(t, 10*time.Second, "the dead process to drop out", func() bool {
		l := e.list(t)
		return len(l.Processes) == 1 && l.Processes[0].ID == "lives"
	})
	t.Logf("the dead process dropped out %v after it died (TTL 3s)", time.Since(killed).Round(time.Millisecond))
	// The live one stays, refreshed: still listed after more than a TTL.
	time.Sleep(3500 * time.Millisecond)
	if l := e.list(t); len(l.Processes) != 1 || l.Processes[0].ID != "lives" {
		t.Fatalf("after more than a TTL: %+v", l)
	}
}

// An entry older than the TTL is ignored even while the server still
// has it.
func TestStaleEntryIgnored(t *testing.T) {
	e := newFleetEnv(t)
	kv := e.createBucket(t, time.Hour, MaxProcessValue)
	b, _ := json.Marshal(ProcessInfo{ID: "old", Version: "v"})
	if _, err := kv.Put(context.Background(), processKey(e.names, "old"), b); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fresh, err := listProcesses(context.Background(), e.js, kv, e.names, DefaultProcessTTL, now, defaultListLimits)
	if err != nil || len(fresh.Processes) != 1 {
		t.Fatalf("now: %+v %v", fresh, err)
	}
	later, err := listProcesses(context.Background(), e.js, kv, e.names, DefaultProcessTTL, now.Add(DefaultProcessTTL+time.Second), defaultListLimits)
	if err != nil || len(later.Processes) != 0 || later.Malformed != 0 {
		t.Fatalf("after the TTL: %+v %v", later, err)
	}
}

// No bucket: no process, no error.
func TestListWithoutBucket(t *testing.T) {
	e := newFleetEnv(t)
	if l := e.list(t); l.Processes == nil || len(l.Processes) != 0 {
		t.Fatalf("%+v", l)
	}
}

// Hostile entries: anyone who may write the bucket writes what they like.
// Each is skipped and counted, or listed bounded; none hides another.
func TestHostileProcessEntries(t *testing.T) {
	e := newFleetEnv(t)
	kv := e.createBucket(t, time.Hour, -1) // no value limit: as an operator's bucket might be
	ctx := context.Background()
	put := func(key, value string) {
		t.Helper()
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	entry := func(p ProcessInfo) string { b, _ := json.Marshal(p); return string(b) }
	prefix := processPrefix(e.names)
	// Malformed: too large, not JSON, no ID, under another process's key.
	put(prefix+"huge", `{"id":"huge","version":"`+strings.Repeat("x", 100<<10)+`"}`)
	put(prefix+"notjson", "\x1b[2J not json")
	put(prefix+"noid", `{"version":"v"}`)
	put(prefix+"impostor", entry(ProcessInfo{ID: "someone-else"}))
	// Listed, bounded.
	ctl := "evil\x1b]0;pwned\x07\u202e\n"
	put(processKey(e.names, ctl), entry(ProcessInfo{ID: ctl, Host: ctl, Version: strings.Repeat("v", 5000)}))
	wild := "host.*.>/1"
	put(processKey(e.names, wild), entry(ProcessInfo{ID: wild, Version: "v"}))
	many := make([]string, 60) // within MaxProcessValue
	for i := range many {
		many[i] = fmt.Sprintf("type-%d-%s", i, strings.Repeat("t", 100))
	}
	future := time.Now().Add(24 * time.Hour)
	put(processKey(e.names, "many"), entry(ProcessInfo{ID: "many", NodeTypes: many, MoreNodeTypes: -5, Workers: -1, InFlight: 1 << 40,
		PID: -7, Started: future, Breaker: ProcessBreaker{Scope: strings.Repeat("s", 1000), State: "open", Since: future, Until: future.Add(time.Hour)}}))
	// An ID that is not UTF-8 decodes to another ID than its key's.
	put(processKey(e.names, "\xff\xfe"), `{"id":"\xff\xfe"}`)
	// Under another consumer: not listed, not counted.
	put("OTHER.other.x", entry(ProcessInfo{ID: "x"}))

	l := e.list(t)
	if l.Malformed != 5 || l.LeftOut != 0 || len(l.Processes) != 3 {
		t.Fatalf("malformed %d, left out %d, listed %d: %+v", l.Malformed, l.LeftOut, len(l.Processes), l.Processes)
	}
	byID := map[string]ProcessInfo{}
	for _, p := range l.Processes {
		byID[p.ID] = p
		if b, _ := json.Marshal(p); len(b) > MaxProcessValue {
			t.Errorf("%q listed as %d bytes of JSON", p.ID, len(b))
		}
	}
	evil := byID[ctl]
	if evil.Host != ctl || len(evil.Version) != maxText {
		t.Errorf("control characters: %+v", evil)
	}
	if _, ok := byID[wild]; !ok {
		t.Errorf("the wildcard-looking ID is not listed: %v", byID)
	}
	m := byID["many"]
	if len(m.NodeTypes) != MaxNodeTypes || m.MoreNodeTypes != len(many)-MaxNodeTypes || len(m.NodeTypes[0]) != maxNodeType ||
		m.Workers != 0 || m.InFlight != maxCount || m.PID != 0 || m.Started.After(m.LastSeen) || m.Breaker.Since.After(m.LastSeen) ||
		len(m.Breaker.Scope) != maxWord || m.Breaker.Until.After(m.LastSeen.Add(statusMaxCooldown)) {
		t.Errorf("bounds not applied: %+v", m)
	}
}

// 10,000 junk keys: the listing reads a bounded number, lists at most
// MaxProcesses and says how many it left out, in bounded time.
func TestManyJunkProcessEntries(t *testing.T) {
	e := newFleetEnv(t)
	e.createBucket(t, time.Hour, MaxProcessValue)
	const total = 10_000
	var futures []jetstream.PubAckFuture
	for i := range total {
		if i%1000 == 0 { // within the client's limit of async publishes under way
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				t.Fatal("publishes not acknowledged within 30s")
			}
		}
		id := fmt.Sprintf("junk-%05d", i)
		value := []byte(`{"id":"` + id + `","version":"v"}`)
		if i%5 == 0 {
			value = []byte("junk")
		}
		f, err := e.js.PublishAsync("$KV."+ProcessBucket+"."+processKey(e.names, id), value)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	start := time.Now()
	l := e.list(t)
	took := time.Since(start)
	t.Logf("listed %d, left out %d, malformed %d of %d entries in %v", len(l.Processes), l.LeftOut, l.Malformed, total, took)
	// The first maxScanned entries are read: a fifth of them malformed.
	if len(l.Processes) != MaxProcesses || l.Malformed != maxScanned/5 || len(l.Processes)+l.LeftOut+l.Malformed != total {
		t.Fatalf("listed %d, left out %d, malformed %d", len(l.Processes), l.LeftOut, l.Malformed)
	}
}

// An Announcer that may not use the bucket warns once, tries again much
// later, and never blocks or stops its process.
func TestAnnounceRefusedWarnsOnce(t *testing.T) {
	srv := natstest.ServerWith(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "c", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{"_INBOX.>"}}}}}
	})
	var refusals atomic.Int64
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("c", "pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { refusals.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a := &announced{}
	an, err := NewAnnouncer(js, queue.DefaultNames(), "refused", a.snapshot, WithAnnounceLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); an.Run(ctx) }()
	eventually(t, 10*time.Second, "a warning", func() bool { return strings.Contains(logs.String(), "could not open the bucket") })
	for range 100 {
		an.Changed() // never blocks, and asks nothing of the server while the bucket is not open
	}
	time.Sleep(300 * time.Millisecond)
	if n := refusals.Load(); n != 1 {
		t.Errorf("%d refusals; want 1 (a denied bucket is tried again after %v)", n, deniedOpenRetry)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings:\n%s", n, logs.String())
	}
	if a.calls.Load() != 0 {
		t.Fatal("wrote without a bucket")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNewAnnouncerValidates(t *testing.T) {
	e := newFleetEnv(t)
	snap := func() ProcessInfo { return ProcessInfo{} }
	for name, f := range map[string]func() error{
		"empty id":     func() error { _, err := NewAnnouncer(e.js, e.names, "", snap); return err },
		"no snapshot":  func() error { _, err := NewAnnouncer(e.js, e.names, "p", nil); return err },
		"no names":     func() error { _, err := NewAnnouncer(e.js, queue.Names{}, "p", snap); return err },
		"zero refresh": func() error { _, err := NewAnnouncer(e.js, e.names, "p", snap, WithRefresh(0)); return err },
		"ttl too long": func() error { _, err := NewAnnouncer(e.js, e.names, "p", snap, WithProcessTTL(time.Hour)); return err },
		"nil logger":   func() error { _, err := NewAnnouncer(e.js, e.names, "p", snap, WithAnnounceLogger(nil)); return err },
	} {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestClipAndKeys(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"aé", 2, "a"}, {"\xffab", 5, "\ufffdab"}, {"\xff\xff", 4, "\ufffd"}, {"", 3, ""},
	} {
		if got := clip(c.in, c.n); got != c.want {
			t.Errorf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	n := queue.DefaultNames()
	if k := processKey(n, "host.*.>/1"); k != "NODEQ_TASKS.nodeq-workers.host=2E=2A=2E=3E=2F1" {
		t.Errorf("key %q", k)
	}
	if k := processKey(n, strings.Repeat("é", 1000)); len(k) > len(processPrefix(n))+3*maxKeyID {
		t.Errorf("key of %d bytes", len(k))
	}
	for ttl, want := range map[time.Duration]time.Duration{0: DefaultProcessTTL, time.Millisecond: time.Second, 3 * time.Second: 3 * time.Second, 24 * time.Hour: maxProcessTTL} {
		if got := processTTL(ttl); got != want {
			t.Errorf("processTTL(%v) = %v, want %v", ttl, got, want)
		}
	}
}

// A bucket deleted under a running Announcer is created again and the
// entry rewritten.
func TestAnnounceRecreatesDeletedBucket(t *testing.T) {
	e := newFleetEnv(t)
	a := &announced{p: ProcessInfo{Version: "v"}}
	e.announce(t, "p", a, WithRefresh(100*time.Millisecond))
	eventually(t, 5*time.Second, "the process to be listed", func() bool { return len(e.list(t).Processes) == 1 })
	if err := e.js.DeleteKeyValue(context.Background(), ProcessBucket); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the process to be listed again", func() bool { return len(e.list(t).Processes) == 1 })
}
