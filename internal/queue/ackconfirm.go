package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AckOptions tune an AckConfirmer. Zero values mean defaults.
type AckOptions struct {
	// ResendAfter is how long an ack waits for the server's confirmation
	// before it is sent again. Default 1s.
	ResendAfter time.Duration
	// GiveUpAfter is how long after its first send an ack is given up on:
	// the consumer's AckWait, after which the server delivers the task
	// again anyway. Default DefaultAckWait.
	GiveUpAfter time.Duration
	// OnResend, if set, is told of every ack sent again.
	OnResend func()
}

// AckConfirmer acknowledges messages and awaits the server's
// confirmations off the worker's path: a worker sends its ack and goes on
// to its next task, while the confirmer collects the answers on one
// subscription, sends again an ack that is not confirmed in time (one lost
// with a connection or during a leader election), and reports each ack's
// fate. It keeps the guarantee of a confirmed ack without a round trip per
// task on the worker's time.
type AckConfirmer struct {
	nc   *nats.Conn
	o    AckOptions
	base string // confirmations come on base.<key>
	sub  *nats.Subscription

	mu      sync.Mutex
	pending map[string]*pendingAck
	last    uint64
	idle    chan struct{} // closed when pending becomes empty; nil while it is
	closed  bool
	stop    chan struct{}
	stopped sync.WaitGroup
}

// errConfirmerClosed is Ack's error after Close.
var errConfirmerClosed = errors.New("the ack confirmer is closed")

// pendingAck is an ack sent and not yet confirmed.
type pendingAck struct {
	reply   string // the message's $JS.ACK subject
	first   time.Time
	sent    time.Time
	resends int
	done    func(confirmed bool, resends int)
}

// Confirmable is a message whose ack the confirmer can send with a reply
// subject of its own; the Puller's messages are. Any other jetstream.Msg
// is acked with DoubleAck on a goroutine.
type Confirmable interface {
	// AckRequest sends +ACK asking for the confirmation on reply, and marks
	// the message acknowledged.
	AckRequest(reply string) error
}

// NewAckConfirmer subscribes to the confirmations on nc.
func NewAckConfirmer(nc *nats.Conn, o AckOptions) (*AckConfirmer, error) {
	if o.ResendAfter <= 0 {
		o.ResendAfter = time.Second
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = DefaultAckWait
	}
	a := &AckConfirmer{nc: nc, o: o, base: nc.NewInbox(), pending: map[string]*pendingAck{}, stop: make(chan struct{})}
	sub, err := nc.Subscribe(a.base+".*", a.confirm)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	a.sub = sub
	a.stopped.Add(1)
	go a.resendLoop()
	return a, nil
}

// Ack acknowledges msg and returns without waiting; done is called once,
// from another goroutine, when the server confirmed the ack (true) or the
// confirmer gave up (false). It returns an error only when the ack could
// not be sent at all.
func (a *AckConfirmer) Ack(msg jetstream.Msg, done func(confirmed bool, resends int)) error {
	c, ok := msg.(Confirmable)
	if !ok {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), a.o.GiveUpAfter)
			defer cancel()
			err := msg.DoubleAck(ctx)
			done(err == nil, 0)
		}()
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return errConfirmerClosed
	}
	a.last++
	key := strconv.FormatUint(a.last, 10)
	p := &pendingAck{reply: msg.Reply(), first: now, sent: now, done: done}
	a.pending[key] = p
	if a.idle == nil {
		a.idle = make(chan struct{})
	}
	a.mu.Unlock()
	if err := c.AckRequest(a.base + "." + key); err != nil {
		a.mu.Lock()
		delete(a.pending, key)
		a.checkIdle()
		a.mu.Unlock()
		return err
	}
	return nil
}

// checkIdle closes idle once nothing is pending; mu must be held.
func (a *AckConfirmer) checkIdle() {
	if len(a.pending) == 0 && a.idle != nil {
		close(a.idle)
		a.idle = nil
	}
}

// confirm takes the server's answer to an ack. A status instead of an
// answer (503: nothing serves the $JS.ACK subject, as while the consumer
// elects a leader) confirms nothing: the ack is sent again at the next
// round.
func (a *AckConfirmer) confirm(m *nats.Msg) {
	key := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	a.mu.Lock()
	p := a.pending[key]
	if p != nil && len(m.Data) == 0 && m.Header.Get("Status") != "" {
		p.sent = time.Time{}
		a.mu.Unlock()
		return
	}
	delete(a.pending, key)
	a.checkIdle()
	a.mu.Unlock()
	if p != nil {
		p.done(true, p.resends)
	}
}

// resendLoop sends again the acks not confirmed in time, and gives up on
// those older than GiveUpAfter.
func (a *AckConfirmer) resendLoop() {
	defer a.stopped.Done()
	t := time.NewTicker(a.o.ResendAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case now := <-t.C:
			a.resend(now)
		}
	}
}

func (a *AckConfirmer) resend(now time.Time) {
	type send struct{ reply, inbox string }
	var sends []send
	var lost []*pendingAck
	a.mu.Lock()
	for key, p := range a.pending {
		switch {
		case now.Sub(p.first) >= a.o.GiveUpAfter:
			delete(a.pending, key)
			lost = append(lost, p)
		case now.Sub(p.sent) >= a.o.ResendAfter:
			p.sent = now
			p.resends++
			sends = append(sends, send{p.reply, a.base + "." + key})
		}
	}
	a.checkIdle()
	a.mu.Unlock()
	for _, s := range sends {
		// The same ack to the same $JS.ACK subject stays valid while the
		// server holds the delivery.
		_ = a.nc.PublishRequest(s.reply, s.inbox, []byte("+ACK"))
		if a.o.OnResend != nil {
			a.o.OnResend()
		}
	}
	for _, p := range lost {
		p.done(false, p.resends)
	}
}

// Pending returns how many acks await their confirmation.
func (a *AckConfirmer) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// Close waits until every ack sent is confirmed or given up on, or ctx is
// done, then stops; acks still pending are given up on, and their number
// is in the error. Call it once the workers have stopped; a second call
// does nothing.
func (a *AckConfirmer) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	idle := a.idle
	a.mu.Unlock()
	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
		}
	}
	close(a.stop)
	a.stopped.Wait()
	_ = a.sub.Unsubscribe()
	a.mu.Lock()
	lost := a.pending
	if len(lost) > 0 {
		err = fmt.Errorf("%d acks not confirmed before the shutdown's deadline", len(lost))
	}
	a.pending = map[string]*pendingAck{}
	a.checkIdle()
	a.mu.Unlock()
	for _, p := range lost {
		p.done(false, p.resends)
	}
	return err
}

// AckRequest sends +ACK with reply as the subject of the server's
// confirmation. It implements Confirmable.
func (p *pulledMsg) AckRequest(reply string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ackd || p.acking {
		return jetstream.ErrMsgAlreadyAckd
	}
	if err := p.nc.PublishRequest(p.m.Reply, reply, []byte("+ACK")); err != nil {
		return err
	}
	p.ackd = true
	return nil
}
