package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Delivery is one message handed to a Handler.
type Delivery struct {
	Msg jetstream.Msg
	// Stopping is done when the consumer begins to shut down: waits that
	// are not the node's own work (retry backoff, a paused breaker) should
	// end and hand the message back.
	Stopping context.Context
}

// Handler processes one delivered message and settles it (ack, nak or
// term). ctx is cancelled only when a shutdown runs out of time.
type Handler func(ctx context.Context, d Delivery)

// Gate limits pulling. Allowance blocks while nothing may be pulled and
// returns how many messages may be pulled now (at least 1). A circuit
// breaker is a Gate: while it is open the subscription is paused.
type Gate interface {
	Allowance(ctx context.Context) (int, error)
}

// PullOptions tune a Puller. Zero values mean defaults.
type PullOptions struct {
	// Workers is how many messages are processed at once. Default 4.
	Workers int
	// PullWait is how long one pull request waits for messages. It bounds
	// how long a shutdown waits for the last pull to end. Default 1s.
	PullWait time.Duration
	// ShutdownTimeout is how long in-flight messages may take to finish after
	// Run's context is done, before their context is cancelled. Default 30s.
	ShutdownTimeout time.Duration
	// Linger is how long a pull waits for more workers to become idle while
	// fewer than half are, so that one request serves several. Default 500µs.
	Linger time.Duration
	// OnPull, if set, is told how long each pull request waited for its
	// first message and how many it delivered.
	OnPull func(wait time.Duration, got int)
	// OnPullFailure, if set, is told the cause (one of the Pull* constants)
	// of every failed pull request.
	OnPullFailure func(cause string)
	// Gate, if set, is asked before every pull.
	Gate Gate
	// Prefetch is how many delivered tasks may wait for a worker, so that
	// the next task is there when a worker frees up. They are kept alive
	// while they wait (see KeepAliveEvery) and handed back at once by
	// HandBackWaiting and at shutdown. 0: none; a worker then waits for a
	// pull round trip between tasks.
	Prefetch int
	// KeepAliveEvery is how often a task the process holds, waiting or
	// running, tells the server it is in progress, at the latest. Default
	// 3s; keep it under a third of AckWait. One sweep does it for every
	// task: no timer per task.
	KeepAliveEvery time.Duration
	// OnWaiting, if set, is told how many delivered tasks wait for a
	// worker after each change.
	OnWaiting func(int)
	// MaxInflightBytes, if positive, bounds the bytes of task messages the
	// process holds (from delivery until its handler returns) plus those
	// its open pull requests may still bring (their max_bytes). It must be
	// at least MaxMsgBytes.
	MaxInflightBytes int64
	// MaxMsgBytes is the largest task message as the server counts it
	// against max_bytes (subject, reply subject, headers and body). Needed
	// with MaxInflightBytes.
	MaxMsgBytes int64
	// OnInflightBytes, if set, is told the bytes in use after each change.
	OnInflightBytes func(int64)
	// HandBack, if set, returns to JetStream a message the Handler will not
	// see: it came after its pull request ended, after shutdown began, or
	// waited for a worker when HandBackWaiting was called. Default: msg.Nak().
	HandBack func(msg jetstream.Msg)
	// Logger receives pull errors. Default slog.Default().
	Logger *slog.Logger
}

// Puller pulls from a durable consumer only as many messages as it has idle
// workers plus a small prefetch, over one subscription, so that a worker
// that frees up finds its next task waiting and little waits in the
// process when it must stop.
type Puller struct {
	nc   *nats.Conn
	cons jetstream.Consumer
	opts PullOptions
	h    Handler
	room *waitingRoom

	mu   sync.Mutex
	loop *pullLoop // set while Run runs
}

// NewPuller returns a Puller that pulls messages of cons over nc and hands
// them to h. A Puller runs once.
func NewPuller(nc *nats.Conn, cons jetstream.Consumer, h Handler, o PullOptions) *Puller {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.PullWait <= 0 {
		o.PullWait = time.Second
	}
	if o.Linger <= 0 {
		o.Linger = 500 * time.Microsecond
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	o.Prefetch = max(o.Prefetch, 0)
	if o.KeepAliveEvery <= 0 {
		o.KeepAliveEvery = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HandBack == nil {
		log := o.Logger
		o.HandBack = func(msg jetstream.Msg) {
			if err := msg.Nak(); err != nil {
				log.Warn("could not hand back a message; it returns after AckWait", "err", err)
			}
		}
	}
	if o.MaxInflightBytes > 0 {
		o.MaxInflightBytes = max(o.MaxInflightBytes, o.MaxMsgBytes)
	}
	return &Puller{nc: nc, cons: cons, opts: o, h: h, room: newWaitingRoom(o.Workers+o.Prefetch, o.OnWaiting)}
}

// heldMsg is a message on its way to a worker with the budget bytes it
// keeps, and when it was delivered.
type heldMsg struct {
	msg   jetstream.Msg
	bytes int64
	since time.Time
}

// HandBackWaiting hands back every delivered task that waits for a worker
// (prefetched), at once, so that other processes may take them: call it
// when the circuit breaker opens. It returns how many it handed back.
func (p *Puller) HandBackWaiting() int {
	p.mu.Lock()
	l := p.loop
	p.mu.Unlock()
	if l == nil {
		return 0
	}
	msgs := p.room.empty()
	l.handBackAll(msgs)
	return len(msgs)
}

// Run pulls and dispatches until ctx is done. Then it stops pulling, hands
// back (nak) every prefetched message and any that arrives for the last
// pull requests, and waits for in-flight messages to finish, at most
// ShutdownTimeout; after that it cancels their context and waits for their
// handlers to return. It returns whether all in-flight work finished in time.
func (p *Puller) Run(ctx context.Context) (finishedInTime bool) {
	info := p.cons.CachedInfo()
	l := newPullLoop(p, info.Stream, info.Name, info.Config.MaxRequestMaxBytes)
	p.mu.Lock()
	p.loop = l
	p.mu.Unlock()
	return l.run(ctx)
}

// fetcher sends pull requests; *pullInbox is one. Each message of a
// request goes to arrive as it comes; end is told once why the request
// ended (nil: filled or expired).
type fetcher interface {
	fetchTo(n int, maxBytes int64, wait time.Duration, arrive func(jetstream.Msg), end func(error)) error
	close()
}

// pullLoop is the state of one Run: the free slots (a slot holds one
// message from delivery until its handler returns, running or waiting in
// the room), the byte budget, and the pull requests under way.
type pullLoop struct {
	p     *Puller
	o     *PullOptions
	log   *slog.Logger
	slots chan struct{} // a token per free slot: Workers + Prefetch in all
	open  chan struct{} // a token per pull request that may be open at once
	in    fetcher

	budget      *byteBudget // nil: no byte limit
	least, most int64       // what one request may reserve
	// unbounded is set when a request got nothing because its first
	// message was larger than the request's max_bytes: the next request
	// asks for one message without a byte limit, so that no message can
	// block the queue.
	unbounded atomic.Bool
	failures  atomic.Int64 // failed pulls in a row

	running []runningSlot // per worker: the message it handles
	runTime atomic.Int64  // moving average of handlers' run time, ns
	parked  int           // prefetch slots held back while tasks run long (the loop's own)

	requests sync.WaitGroup // pull requests still handing out messages
	strays   sync.WaitGroup // hand-backs under way
	straysMu sync.Mutex
	ended    bool // Run is returning: hand strays back inline
}

// newPullLoop prepares a Run of p against stream and consumer.
func newPullLoop(p *Puller, stream, consumer string, maxRequestBytes int) *pullLoop {
	o := &p.opts
	l := &pullLoop{p: p, o: o, log: o.Logger, slots: make(chan struct{}, o.Workers+o.Prefetch), running: make([]runningSlot, o.Workers),
		open: make(chan struct{}, maxOpenRequests)}
	for range maxOpenRequests {
		l.open <- struct{}{}
	}
	for range o.Workers + o.Prefetch {
		l.slots <- struct{}{}
	}
	if o.MaxInflightBytes > 0 {
		l.budget = newByteBudget(o.MaxInflightBytes, o.OnInflightBytes)
	}
	// An operator may cap what one pull request may ask for.
	l.least, l.most = o.MaxMsgBytes, int64(o.Workers+o.Prefetch)*o.MaxMsgBytes
	if limit := int64(maxRequestBytes); limit > 0 {
		l.least, l.most = min(l.least, limit), min(l.most, limit)
	}
	l.in = newPullInbox(p.nc, stream, consumer, l.stray)
	return l
}

// release frees n slots.
func (l *pullLoop) release(n int) {
	for range n {
		l.slots <- struct{}{}
	}
}

// done returns a message's slot and bytes once it is handled or handed back.
func (l *pullLoop) done(h heldMsg) {
	if l.budget != nil {
		l.budget.release(h.bytes)
	}
	l.release(1)
}

// handBackAll hands back messages that will not run here, concurrently:
// each may first note the hand-back in the delivery ledger.
func (l *pullLoop) handBackAll(msgs []heldMsg) {
	var wg sync.WaitGroup
	for _, h := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.o.HandBack(h.msg)
			l.done(h)
		}()
	}
	wg.Wait()
}

// stray takes a message that came after its request ended on this side.
func (l *pullLoop) stray(msg jetstream.Msg) { l.handBackLater(heldMsg{msg: msg}, false) }

// handBackLater hands a message back on a goroutine of its own (a
// hand-back may note it in the delivery ledger first: a round trip), and
// frees its slot and bytes if it holds them.
func (l *pullLoop) handBackLater(h heldMsg, holds bool) {
	l.straysMu.Lock()
	defer l.straysMu.Unlock()
	if l.ended {
		_ = h.msg.Nak()
		if holds {
			l.done(h)
		}
		return
	}
	l.strays.Add(1)
	go func() {
		defer l.strays.Done()
		l.o.HandBack(h.msg)
		if holds {
			l.done(h)
		}
	}()
}

// maxOpenRequests caps the pull requests a process has open at once: the
// server keeps at most max_waiting (512 by default) for a consumer, for
// the whole fleet, and an open request that waits for messages holds one.
// A new request waits for one to end (at most pull_wait), and then asks
// for every slot freed meanwhile.
const maxOpenRequests = 4

// longRun is the run time from which tasks are long enough that a pull
// round trip between two of them does not matter, while a task prefetched
// behind one would wait that long for a worker of this process, when
// another process may be idle: the prefetch is then parked.
const longRun = 200 * time.Millisecond

// parkPrefetch parks the slot the loop just took, and reports true, while
// tasks run long (see longRun) and fewer than Prefetch slots are parked:
// the loop then pulls only for idle workers. When tasks run short again,
// the parked slots are released. On the switch to long runs the tasks
// waiting in the room go back to the stream.
func (l *pullLoop) parkPrefetch() bool {
	long := time.Duration(l.runTime.Load()) >= longRun
	switch {
	case long && l.parked < l.o.Prefetch:
		if l.parked == 0 {
			if n := l.p.HandBackWaiting(); n > 0 {
				l.log.Info("tasks run long: prefetch off, prefetched tasks handed back", "tasks", n, "average_run", time.Duration(l.runTime.Load()))
			}
		}
		l.parked++
		return true
	case !long && l.parked > 0:
		l.release(l.parked)
		l.parked = 0
	}
	return false
}

// noteRun adds a handler's run time to the moving average.
func (l *pullLoop) noteRun(d time.Duration) {
	for {
		old := l.runTime.Load()
		avg := old - old/8 + int64(d)/8
		if l.runTime.CompareAndSwap(old, avg) {
			return
		}
	}
}

// wantMore reports whether a pull that has n of limit slots should wait
// (linger) for more slots to free up: while it has fewer than half, so
// that under load one request serves several workers. (Pulling at once
// whenever the prefetch runs short was tried: twice the pull requests,
// and a third less throughput for short tasks, the server and the
// consumer sharing the cores.)
func wantMore(n, limit int) bool { return n*2 < limit }

// claim waits for a free slot, then takes every other free one up to the
// gate's allowance, lingering briefly for more while it has fewer than
// half. It reports false when ctx is done.
func (l *pullLoop) claim(ctx context.Context) (int, bool) {
	for {
		select {
		case <-l.slots:
		case <-ctx.Done():
			return 0, false
		}
		if !l.parkPrefetch() {
			break
		}
	}
	limit := cap(l.slots) - l.parked
	if l.o.Gate != nil {
		allowed, err := l.o.Gate.Allowance(ctx)
		if err != nil {
			l.release(1)
			return 0, false
		}
		limit = min(limit, allowed)
	}
	n := 1
	var linger <-chan time.Time
	for n < limit {
		select {
		case <-l.slots:
			n++
			continue
		default:
		}
		if !wantMore(n, limit) {
			break
		}
		if linger == nil {
			linger = time.After(l.o.Linger)
		}
		select {
		case <-l.slots:
			n++
		case <-linger:
			return n, true
		case <-ctx.Done():
			return n, true
		}
	}
	return n, true
}

// reserve takes the bytes for a request of n messages. It may lower n to
// 1 (a request without a byte limit), releasing the other slots.
func (l *pullLoop) reserve(ctx context.Context, n int) (res *reservation, maxBytes int64, got int, err error) {
	if l.budget == nil {
		return nil, 0, n, nil
	}
	if l.unbounded.Swap(false) {
		l.release(n - 1)
		return &reservation{b: l.budget, unbounded: true}, 0, 1, nil
	}
	reserved, err := l.budget.reserve(ctx, l.least, min(int64(n)*l.o.MaxMsgBytes, l.most))
	if err != nil {
		return nil, 0, n, err
	}
	return &reservation{b: l.budget, left: reserved}, reserved, n, nil
}

// failed logs and counts a failed pull by its cause.
func (l *pullLoop) failed(err error) (cause string, n int64) {
	cause = PullFailureCause(err)
	n = l.failures.Add(1)
	l.log.Warn("pull request failed: "+explainPullFailure(cause)+"; retrying", "cause", cause, "err", err, "consecutive_failures", n)
	if l.o.OnPullFailure != nil {
		l.o.OnPullFailure(cause)
	}
	return cause, n
}

// backoff waits after a failed pull, longer the more failures in a row.
// Failures a cluster recovers from by itself in seconds (a leader
// election, a reconnect) wait at most 1s, so that pulling resumes soon
// after; the count grows by every overlapping pull, so a 5s cap would be
// reached within a few rounds. It reports false when ctx ended the wait.
func (l *pullLoop) backoff(ctx context.Context, err error) bool {
	cause, n := l.failed(err)
	most := 5 * time.Second
	switch cause {
	case PullNoResponders, PullLeadershipChange, PullServerShutdown, PullTimeout, PullDisconnected:
		most = time.Second
	}
	select {
	case <-time.After(min(time.Duration(n)*200*time.Millisecond, most)):
		return true
	case <-ctx.Done():
		return false
	}
}

// request is one pull request under way: the slots and bytes it holds
// for the messages it may still bring.
type request struct {
	l      *pullLoop
	ctx    context.Context
	res    *reservation
	n, got int
	pulled time.Time
}

// arrive puts a message of the request in the room, on the subscription's
// goroutine: it must not block.
func (r *request) arrive(msg jetstream.Msg) {
	l := r.l
	if r.got++; r.got == 1 && l.o.OnPull != nil {
		l.o.OnPull(time.Since(r.pulled), 1)
	}
	h := heldMsg{msg: msg, since: time.Now()}
	if pm, ok := msg.(*pulledMsg); ok {
		h.bytes = r.res.take(wireSize(pm.m))
	}
	if r.ctx.Err() != nil || !l.p.room.put(h, h.since) {
		// Arrived after shutdown began: straight back to the stream.
		l.handBackLater(h, true)
	}
}

// end settles the request's end: what it did not bring goes back.
func (r *request) end(err error) {
	l := r.l
	r.res.end()
	switch {
	case errors.Is(err, errPullUnanswered):
		// The wait is over already (expiry and a second): no backoff.
		l.failed(err)
	case err == nil || isPullTimeout(err):
		l.failures.Store(0)
	case exceedsMaxBytes(err):
		// Normal end of a request whose bytes are used up; with none
		// delivered, the next message is larger than MaxMsgBytes.
		if r.got == 0 {
			l.log.Warn("the next task is larger than consumer.max_inflight_bytes allows for one message; pulling it alone without a byte limit")
			l.unbounded.Store(true)
		}
	case r.got == 0:
		// Keep the slots while backing off, so that the loop cannot spin;
		// not on the subscription's goroutine.
		go func() {
			l.backoff(r.ctx, err)
			l.release(r.n)
			l.open <- struct{}{}
			l.requests.Done()
		}()
		return
	default:
		l.failed(err) // ended early after some messages (a leadership change): no wait
	}
	l.release(r.n - r.got)
	l.open <- struct{}{}
	l.requests.Done()
}

// runningSlot is the message a worker handles, and when it last told the
// server it is in progress.
type runningSlot struct {
	mu      sync.Mutex
	msg     jetstream.Msg // nil while the worker is idle
	touched time.Time
}

// work runs handlers (as worker i) for messages from the room until it is
// closed and empty.
func (l *pullLoop) work(i int, workCtx, stopping context.Context) {
	slot := &l.running[i]
	for {
		h, ok := l.p.room.take(nil)
		if !ok {
			return
		}
		slot.mu.Lock()
		slot.msg, slot.touched = h.msg, h.since
		slot.mu.Unlock()
		start := time.Now()
		l.p.h(workCtx, Delivery{Msg: h.msg, Stopping: stopping})
		l.noteRun(time.Since(start))
		slot.mu.Lock()
		slot.msg = nil
		slot.mu.Unlock()
		l.done(h)
	}
}

// staleRunning returns the running messages that last told the server
// they are in progress before since, and marks them as told now.
func (l *pullLoop) staleRunning(since, now time.Time) []jetstream.Msg {
	var out []jetstream.Msg
	for i := range l.running {
		slot := &l.running[i]
		slot.mu.Lock()
		if slot.msg != nil && slot.touched.Before(since) {
			slot.touched = now
			out = append(out, slot.msg)
		}
		slot.mu.Unlock()
	}
	return out
}

// keepHeldAlive tells the server, for every task the process has held for
// a while (waiting in the room or running), that it is in progress, until
// stop is closed: JetStream must not deliver it elsewhere meanwhile.
func (l *pullLoop) keepHeldAlive(stop <-chan struct{}) {
	every := l.o.KeepAliveEvery / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			since := now.Add(-every)
			stale := append(l.p.room.stale(since, now), l.staleRunning(since, now)...)
			if err := keepAlive(stale); err != nil {
				l.log.Warn("could not extend the ack deadline of a task", "err", err)
			}
		case <-stop:
			return
		}
	}
}

// run is Run.
func (l *pullLoop) run(ctx context.Context) bool {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// A fixed pool of long-lived workers: a goroutine per message would pay
	// for a fresh stack (and its growth) every time.
	var workers sync.WaitGroup
	for i := range l.o.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			l.work(i, workCtx, ctx)
		}()
	}
	stopKeepAlive := make(chan struct{})
	keptAlive := make(chan struct{})
	go func() {
		defer close(keptAlive)
		l.keepHeldAlive(stopKeepAlive)
	}()
	defer func() {
		l.straysMu.Lock()
		l.ended = true
		l.straysMu.Unlock()
		l.strays.Wait()
		l.in.close()
	}()

	for {
		select {
		case <-l.open:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		n, ok := l.claim(ctx)
		if !ok {
			break
		}
		res, maxBytes, n, err := l.reserve(ctx, n)
		if err != nil {
			l.release(n)
			l.open <- struct{}{}
			break
		}
		// The request's messages go to the room as they arrive while the
		// loop goes on to pull for slots that free up meanwhile: requests
		// overlap, and together never ask for more messages than there are
		// free slots.
		r := &request{l: l, ctx: ctx, res: res, n: n, pulled: time.Now()}
		l.requests.Add(1)
		if err := l.in.fetchTo(n, maxBytes, l.o.PullWait, r.arrive, r.end); err != nil {
			l.requests.Done()
			res.end()
			l.release(n)
			l.open <- struct{}{}
			if !l.backoff(ctx, err) {
				break
			}
		}
	}

	// Shutdown: what waits for a worker goes back to the stream at once.
	l.handBackAll(l.p.room.close())
	finished := make(chan struct{})
	go func() {
		l.requests.Wait() // every request has handed out its messages
		workers.Wait()
		close(stopKeepAlive) // the running tasks are kept alive until they end
		<-keptAlive
		close(finished)
	}()
	select {
	case <-finished:
		return true
	case <-time.After(l.o.ShutdownTimeout):
		l.log.Warn("shutdown timeout reached; interrupting in-flight tasks", "timeout", l.o.ShutdownTimeout)
		cancelWork()
		<-finished
		return false
	}
}
