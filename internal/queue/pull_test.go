package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stubMsg is a delivered message that records how it was settled.
type stubMsg struct {
	jetstream.Msg // nil: calls this type does not define panic
	id            int
	progress      atomic.Int32
	naks          atomic.Int32
}

func (m *stubMsg) Subject() string      { return "tasks.echo" }
func (m *stubMsg) Headers() nats.Header { return nil }
func (m *stubMsg) Data() []byte         { return nil }
func (m *stubMsg) InProgress() error    { m.progress.Add(1); return nil }
func (m *stubMsg) Nak() error           { m.naks.Add(1); return nil }

// stubFetcher answers pull requests with batches the test fills.
type stubFetcher struct {
	mu       sync.Mutex
	requests []int // n of each request
	batches  []*stubBatch
	next     int
}

type stubBatch struct {
	n      int
	arrive func(jetstream.Msg)
	end    func(error)
	ended  bool
}

func (f *stubFetcher) fetchTo(n int, _ int64, _ time.Duration, arrive func(jetstream.Msg), end func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, n)
	f.batches = append(f.batches, &stubBatch{n: n, arrive: arrive, end: end})
	return nil
}

func (f *stubFetcher) close() {}

// fill answers request i with its full batch of new messages.
func (f *stubFetcher) fill(i int) []*stubMsg {
	f.mu.Lock()
	b := f.batches[i]
	var out []*stubMsg
	for range b.n {
		f.next++
		out = append(out, &stubMsg{id: f.next})
	}
	b.ended = true
	f.mu.Unlock()
	for _, m := range out {
		b.arrive(m)
	}
	b.end(nil)
	return out
}

// expireAll ends every request not filled, empty, as the server does
// when they expire.
func (f *stubFetcher) expireAll() {
	f.mu.Lock()
	var ends []func(error)
	for _, b := range f.batches {
		if !b.ended {
			b.ended = true
			ends = append(ends, b.end)
		}
	}
	f.mu.Unlock()
	for _, end := range ends {
		end(nil)
	}
}

// one delivers a single new message to request i, which stays open.
func (f *stubFetcher) one(i int) {
	f.mu.Lock()
	b := f.batches[i]
	f.next++
	m := &stubMsg{id: f.next}
	f.mu.Unlock()
	b.arrive(m)
}

// open counts the requests not ended.
func (f *stubFetcher) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range f.batches {
		if !b.ended {
			n++
		}
	}
	return n
}

func (f *stubFetcher) asked() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.requests...)
}

// onceGate allows one message once, then nothing.
type onceGate struct{ used atomic.Bool }

func (g *onceGate) Allowance(ctx context.Context) (int, error) {
	if !g.used.Swap(true) {
		return 1, nil
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// pullRig is a Puller over a stubFetcher whose handler blocks until released.
type pullRig struct {
	p        *Puller
	l        *pullLoop
	f        *stubFetcher
	release  chan struct{}
	running  atomic.Int32
	handed   sync.Map // *stubMsg handed back
	handedN  atomic.Int32
	finished chan bool
	cancel   context.CancelFunc
}

func newPullRig(t *testing.T, o PullOptions) *pullRig {
	r := &pullRig{f: &stubFetcher{}, release: make(chan struct{}), finished: make(chan bool, 1)}
	o.HandBack = func(m jetstream.Msg) { r.handed.Store(m, true); r.handedN.Add(1) }
	r.p = NewPuller(nil, nil, func(ctx context.Context, d Delivery) {
		r.running.Add(1)
		defer r.running.Add(-1)
		select {
		case <-r.release:
		case <-ctx.Done():
		}
	}, o)
	r.l = newPullLoop(r.p, "S", "C", 0)
	r.l.in = r.f
	r.p.loop = r.l
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.finished <- r.l.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.f.expireAll()
		select {
		case <-r.release:
		default:
			close(r.release)
		}
		<-r.finished
	})
	return r
}

// The pull loop asks for no more than its free slots: the workers' and the
// prefetch's. Prefetched tasks wait, kept alive, and go back to the stream
// at once when told (the breaker opened) or at shutdown.
func TestPullPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPullRig(t, PullOptions{Workers: 2, Prefetch: 3, PullWait: time.Second, KeepAliveEvery: time.Second})
		synctest.Wait()
		if got := r.f.asked(); len(got) != 1 || got[0] != 5 {
			t.Fatalf("requests %v; want one for 5 (2 workers + 3 prefetched)", got)
		}
		msgs := r.f.fill(0)
		synctest.Wait()
		if n := r.running.Load(); n != 2 {
			t.Fatalf("%d running, want 2", n)
		}
		// Every slot is taken: nothing more is asked for, however long.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := r.f.asked(); len(got) != 1 {
			t.Fatalf("requests %v; want no more while every slot is taken", got)
		}
		// Every task held, waiting or running, was kept alive.
		for _, m := range msgs {
			if m.progress.Load() < 5 {
				t.Fatalf("task %d was held 10s and said it is in progress %d times; want every 1s at the latest", m.id, m.progress.Load())
			}
		}
		if n := r.p.HandBackWaiting(); n != 3 {
			t.Fatalf("handed back %d, want 3", n)
		}
		for _, m := range msgs[2:] {
			if _, ok := r.handed.Load(m); !ok {
				t.Fatalf("task %d was not handed back", m.id)
			}
		}
		synctest.Wait()
		if got := r.f.asked(); len(got) != 2 || got[1] != 3 {
			t.Fatalf("requests %v; want a second for the 3 freed slots", got)
		}
		// Shutdown: what arrives, and what waits, goes straight back.
		more := r.f.fill(1)
		synctest.Wait()
		r.cancel()
		synctest.Wait()
		for _, m := range more {
			if _, ok := r.handed.Load(m); !ok {
				t.Fatalf("task %d waited at shutdown and was not handed back", m.id)
			}
		}
		if n := r.running.Load(); n != 2 {
			t.Fatalf("%d running during shutdown, want the 2 in flight", n)
		}
		r.f.expireAll()
		close(r.release)
		if !<-r.finished {
			t.Fatal("shutdown reported unfinished work")
		}
		r.finished <- true // for the cleanup
	})
}

// A gate that allows one message (a half-open breaker's probe) gets one
// pulled, whatever the free slots.
func TestPullHalfOpenAsksForOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newPullRig(t, PullOptions{Workers: 4, Prefetch: 4, PullWait: time.Second, Gate: &onceGate{}})
		synctest.Wait()
		if got := r.f.asked(); len(got) != 1 || got[0] != 1 {
			t.Fatalf("requests %v; want one for 1", got)
		}
	})
}

// Under load a pull waits briefly for more free slots (linger) while it
// has fewer than half, so that one request serves several workers.
func TestPullLinger(t *testing.T) {
	for _, c := range []struct {
		n, limit int
		want     bool
	}{{1, 8, true}, {3, 8, true}, {4, 8, false}, {8, 8, false}, {1, 1, false}, {1, 2, false}, {9, 20, true}, {10, 20, false}} {
		if got := wantMore(c.n, c.limit); got != c.want {
			t.Errorf("wantMore(%d, %d) = %v", c.n, c.limit, got)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		r := newPullRig(t, PullOptions{Workers: 8, PullWait: time.Second, Linger: time.Millisecond})
		synctest.Wait()
		r.f.fill(0) // 8 running
		synctest.Wait()
		// One finishes: the loop lingers for more before it pulls.
		r.release <- struct{}{}
		synctest.Wait()
		if got := r.f.asked(); len(got) != 1 {
			t.Fatalf("requests %v; want the loop to linger with 1 of 8 free", got)
		}
		r.release <- struct{}{}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if got := r.f.asked(); len(got) != 2 || got[1] != 2 {
			t.Fatalf("requests %v; want one for the 2 freed within the linger", got)
		}
	})
}

// The waiting room never blocks a put, wakes a take for each message, and
// survives being emptied under a waiting take.
func TestWaitingRoom(t *testing.T) {
	var counts []int
	r := newWaitingRoom(3, func(n int) { counts = append(counts, n) })
	for i := range 3 {
		if !r.put(heldMsg{msg: &stubMsg{id: i}}, time.Now()) {
			t.Fatal("put refused")
		}
	}
	if got := r.empty(); len(got) != 3 {
		t.Fatalf("emptied %d, want 3", len(got))
	}
	r.put(heldMsg{msg: &stubMsg{id: 9}}, time.Now())
	h, ok := r.take(nil)
	if !ok || h.msg.(*stubMsg).id != 9 {
		t.Fatalf("took %v, %v; want the message put after the room was emptied", h, ok)
	}
	r.put(heldMsg{msg: &stubMsg{id: 10}}, time.Now())
	if left := r.close(); len(left) != 1 {
		t.Fatalf("close returned %d, want the 1 waiting", len(left))
	}
	if r.put(heldMsg{msg: &stubMsg{}}, time.Now()) {
		t.Fatal("put accepted after close")
	}
	if _, ok := r.take(nil); ok {
		t.Fatal("take after close returned a message")
	}
	if fmt.Sprint(counts) != "[1 2 3 0 1 0 1 0]" {
		t.Fatalf("counts %v", counts)
	}
}

// autoFetcher fills every request at once with new messages.
type autoFetcher struct {
	mu       sync.Mutex
	requests []int
	next     int
}

func (f *autoFetcher) fetchTo(n int, _ int64, _ time.Duration, arrive func(jetstream.Msg), end func(error)) error {
	f.mu.Lock()
	f.requests = append(f.requests, n)
	first := f.next
	f.next += n
	f.mu.Unlock()
	go func() {
		for i := range n {
			arrive(&stubMsg{id: first + i})
		}
		end(nil)
	}()
	return nil
}

func (f *autoFetcher) close() {}

// Once tasks run long, the prefetch is parked: what waits goes back to the
// stream, and the loop pulls only for idle workers; short tasks bring it back.
func TestPullParksPrefetchForLongRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runFor atomic.Int64
		runFor.Store(int64(time.Second))
		var handed, mostWaiting atomic.Int32
		f := &autoFetcher{}
		p := NewPuller(nil, nil, func(ctx context.Context, d Delivery) {
			time.Sleep(time.Duration(runFor.Load()))
		}, PullOptions{Workers: 2, Prefetch: 4, PullWait: time.Second, HandBack: func(jetstream.Msg) { handed.Add(1) },
			OnWaiting: func(n int) {
				if int32(n) > mostWaiting.Load() {
					mostWaiting.Store(int32(n))
				}
			}})
		l := newPullLoop(p, "S", "C", 0)
		l.in = f
		p.loop = l
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() { done <- l.run(ctx) }()
		time.Sleep(10 * time.Second)
		mostWaiting.Store(0)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if n := mostWaiting.Load(); n > 2 { // a request for both idle workers lands before they take it
			t.Fatalf("%d tasks waited for a worker while tasks ran long; want the prefetch parked", n)
		}
		f.mu.Lock()
		first := f.requests[0]
		tail := append([]int(nil), f.requests[len(f.requests)-5:]...)
		f.mu.Unlock()
		if first != 6 {
			t.Fatalf("first request %d, want 6 (2 workers + 4 prefetched)", first)
		}
		for _, n := range tail {
			if n > 2 {
				t.Fatalf("requests %v after tasks ran long; want none for more than the 2 workers", tail)
			}
		}
		if handed.Load() == 0 {
			t.Fatal("the waiting tasks were not handed back when tasks turned long")
		}
		// Short runs bring the prefetch back: tasks wait in the room again.
		runFor.Store(int64(time.Millisecond))
		time.Sleep(2 * time.Second)
		mostWaiting.Store(0)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := mostWaiting.Load(); n < 3 {
			t.Fatalf("at most %d tasks waited after tasks turned short; want the prefetch back", n)
		}
		cancel()
		if !<-done {
			t.Fatal("unfinished at shutdown")
		}
	})
}

// A process keeps at most maxOpenRequests pull requests open, however
// many slots free up while they wait: the server's max_waiting is shared
// by the whole fleet.
func TestPullOpenRequestsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &stubFetcher{}
		p := NewPuller(nil, nil, func(context.Context, Delivery) {}, PullOptions{Workers: 16, PullWait: time.Second})
		l := newPullLoop(p, "S", "C", 0)
		l.in = f
		p.loop = l
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() { done <- l.run(ctx) }()
		synctest.Wait()
		// Request 0 asked for every slot; each message it brings runs at
		// once and frees a slot, and the loop asks for that slot anew
		// while request 0 stays open.
		for range 10 {
			f.one(0)
			time.Sleep(time.Millisecond) // past the linger
			synctest.Wait()
		}
		if n := f.open(); n != 4 { // maxOpenRequests, written out: the test is of its value too
			t.Fatalf("%d requests open (asked %v); want 4", n, f.asked())
		}
		cancel()
		f.expireAll()
		<-done
	})
}
