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
	// see: it came after its pull request ended, or after shutdown began.
	// Default: msg.Nak().
	HandBack func(msg jetstream.Msg)
	// Logger receives pull errors. Default slog.Default().
	Logger *slog.Logger
}

// Puller pulls from a durable consumer only as many messages as it has idle
// workers, so that nothing waits in a client-side buffer.
type Puller struct {
	nc   *nats.Conn
	cons jetstream.Consumer
	opts PullOptions
	h    Handler
}

// NewPuller returns a Puller that pulls messages of cons over nc and hands
// them to h.
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
	return &Puller{nc: nc, cons: cons, opts: o, h: h}
}

// heldMsg is a message on its way to a worker with the budget bytes it keeps.
type heldMsg struct {
	msg   jetstream.Msg
	bytes int64
}

// Run pulls and dispatches until ctx is done. Then it stops pulling, hands
// back (nak) any message that arrives for the last pull request, and waits
// for in-flight messages to finish, at most ShutdownTimeout; after that it
// cancels their context and waits for their handlers to return. It returns
// whether all in-flight work finished in time.
func (p *Puller) Run(ctx context.Context) (finishedInTime bool) {
	log := p.opts.Logger
	idle := make(chan struct{}, p.opts.Workers)
	for range p.opts.Workers {
		idle <- struct{}{}
	}
	release := func(n int) {
		for range n {
			idle <- struct{}{}
		}
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var budget *byteBudget
	if p.opts.MaxInflightBytes > 0 {
		budget = newByteBudget(p.opts.MaxInflightBytes, p.opts.OnInflightBytes)
	}
	// A fixed pool of long-lived workers: a goroutine per message would pay
	// for a fresh stack (and its growth) every time.
	work := make(chan heldMsg)
	var workers sync.WaitGroup
	for range p.opts.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for h := range work {
				p.h(workCtx, Delivery{Msg: h.msg, Stopping: ctx})
				if budget != nil {
					budget.release(h.bytes)
				}
				release(1)
			}
		}()
	}
	// Messages that come after their request ended are handed back off the
	// connection's callback, and waited for before Run returns.
	var strays sync.WaitGroup
	var straysMu sync.Mutex
	straysDone := false
	defer func() {
		straysMu.Lock()
		straysDone = true
		straysMu.Unlock()
		strays.Wait()
	}()
	info := p.cons.CachedInfo()
	// An operator may cap what one pull request may ask for.
	least, most := p.opts.MaxMsgBytes, int64(p.opts.Workers)*p.opts.MaxMsgBytes
	if limit := int64(info.Config.MaxRequestMaxBytes); limit > 0 {
		least, most = min(least, limit), min(most, limit)
	}
	inbox := newPullInbox(p.nc, info.Stream, info.Name, func(msg jetstream.Msg) {
		straysMu.Lock()
		defer straysMu.Unlock()
		if straysDone {
			_ = msg.Nak()
			return
		}
		strays.Add(1)
		go func() {
			defer strays.Done()
			p.opts.HandBack(msg)
		}()
	})
	// unbounded is set when a request got nothing because its first message
	// was larger than the request's max_bytes: the next request asks for one
	// message without a byte limit, so that no message can block the queue.
	var unbounded atomic.Bool
	var wg sync.WaitGroup
	var failures atomic.Int64
	// failed logs and counts a failed pull by its cause.
	failed := func(err error) (cause string, n int64) {
		cause = PullFailureCause(err)
		n = failures.Add(1)
		log.Warn("pull request failed: "+explainPullFailure(cause)+"; retrying", "cause", cause, "err", err, "consecutive_failures", n)
		if p.opts.OnPullFailure != nil {
			p.opts.OnPullFailure(cause)
		}
		return cause, n
	}
	// backoff waits after a failed pull, longer the more failures in a row.
	// Failures a cluster recovers from by itself in seconds (a leader
	// election, a reconnect) wait at most 1s, so that pulling resumes soon
	// after; the count grows by every overlapping pull, so a 5s cap would
	// be reached within a few rounds.
	backoff := func(err error) bool {
		cause, n := failed(err)
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

pulling:
	for {
		// Wait for one idle worker, then take every other idle one.
		select {
		case <-idle:
		case <-ctx.Done():
			break pulling
		}
		limit := p.opts.Workers
		if p.opts.Gate != nil {
			allowed, err := p.opts.Gate.Allowance(ctx)
			if err != nil {
				release(1)
				break pulling
			}
			limit = min(limit, allowed)
		}
		n := 1
		// Take every idle worker; while fewer than half are, linger briefly for
		// more, so that under load one pull request serves several workers.
		var linger <-chan time.Time
	more:
		for n < limit {
			select {
			case <-idle:
				n++
				continue
			default:
			}
			if n*2 >= limit {
				break
			}
			if linger == nil {
				linger = time.After(p.opts.Linger)
			}
			select {
			case <-idle:
				n++
			case <-linger:
				break more
			case <-ctx.Done():
				break more
			}
		}
		var res *reservation
		var maxBytes int64
		if budget != nil {
			if unbounded.Swap(false) {
				release(n - 1)
				n = 1
				res = &reservation{b: budget, unbounded: true}
			} else {
				reserved, err := budget.reserve(ctx, least, min(int64(n)*p.opts.MaxMsgBytes, most))
				if err != nil {
					release(n)
					break pulling
				}
				res, maxBytes = &reservation{b: budget, left: reserved}, reserved
			}
		}
		pulled := time.Now()
		batch, err := inbox.fetch(n, maxBytes, p.opts.PullWait)
		if err != nil {
			res.end()
			release(n)
			if !backoff(err) {
				break pulling
			}
			continue
		}
		// Hand the batch out as it arrives while the loop goes on to pull for
		// workers that become idle meanwhile: pulls overlap, and together
		// never ask for more messages than there are idle workers.
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := 0
			for msg := range batch.Messages() {
				if got++; got == 1 && p.opts.OnPull != nil {
					p.opts.OnPull(time.Since(pulled), 1)
				}
				if ctx.Err() != nil {
					// Arrived after shutdown began: hand it straight back.
					p.opts.HandBack(msg)
					release(1)
					continue
				}
				h := heldMsg{msg: msg}
				if pm, ok := msg.(*pulledMsg); ok {
					h.bytes = res.take(wireSize(pm.m))
				}
				work <- h // a worker is free: this message holds its slot
			}
			res.end()
			switch err := batch.Error(); {
			case errors.Is(err, errPullUnanswered):
				// The wait is over already (expiry and a second): no backoff.
				failed(err)
			case err == nil || isPullTimeout(err):
				failures.Store(0)
			case exceedsMaxBytes(err):
				// Normal end of a request whose bytes are used up; with none
				// delivered, the next message is larger than MaxMsgBytes.
				if got == 0 {
					log.Warn("the next task is larger than consumer.max_inflight_bytes allows for one message; pulling it alone without a byte limit")
					unbounded.Store(true)
				}
			case got == 0:
				backoff(err) // keep the slots while backing off, so the loop cannot spin
			default:
				failed(err) // ended early after some messages (a leadership change): no wait
			}
			release(n - got)
		}()
	}

	finished := make(chan struct{})
	go func() {
		wg.Wait() // every pull has handed out its messages
		close(work)
		workers.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return true
	case <-time.After(p.opts.ShutdownTimeout):
		log.Warn("shutdown timeout reached; interrupting in-flight tasks", "timeout", p.opts.ShutdownTimeout)
		cancelWork()
		<-finished
		return false
	}
}
