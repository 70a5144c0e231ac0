package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackPrefix starts the reply subject of every message JetStream delivers
// from a stream. The server sets it; a producer cannot.
const ackPrefix = "$JS.ACK."

// pullInbox sends a Puller's pull requests for a durable consumer. Each
// request is answered on an inbox subscription of its own, taken from a
// pool and returned when the request ends: a pull costs one publish, not a
// subscription, a goroutine and an unsubscribe. JetStream delivers a task
// with the subject it was published on, so only the subscription it comes
// on tells which request it answers; hence one open request per inbox.
//
// nats.go's Fetch is not used because it decides whether a message is a
// task or a status of the server by its content: an empty message with a
// Status header is taken for a status and dropped. Such a message can be
// published by any producer; JetStream then delivers it again every
// AckWait, forever, holding a worker's slot each time, and no handler ever
// sees it. pullInbox tells them apart by what only the server controls:
// a delivered message has a $JS.ACK reply subject, a status has none.
type pullInbox struct {
	nc      *nats.Conn
	next    string              // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
	onStray func(jetstream.Msg) // takes messages that came too late for their request

	mu     sync.Mutex
	free   []*inboxSub // subscribed, no request open
	all    map[*inboxSub]struct{}
	closed bool
}

// inboxSub is one subscription of the pool and the request it answers.
type inboxSub struct {
	in      *pullInbox
	subject string
	sub     *nats.Subscription
	mu      sync.Mutex
	current *pullBatch // nil between requests
}

// pullBatch is the answer to one pull request: up to n messages, each to
// arrive (or, in tests, on the Messages channel, which then closes); end
// (Error) says why it ended early, if for a reason other than the request
// expiring with fewer messages.
type pullBatch struct {
	in        *pullInbox
	on        *inboxSub // nil in tests
	mu        sync.Mutex
	msgs      chan jetstream.Msg
	remaining int
	done      bool
	err       error
	timer     *time.Timer
	// In push mode (fetchTo) messages go to arrive as they come, on the
	// subscription's goroutine, and end is told why the request ended;
	// msgs is nil.
	arrive func(jetstream.Msg)
	end    func(error)
}

// Messages returns the batch's messages; the channel closes when the
// request is over.
func (b *pullBatch) Messages() <-chan jetstream.Msg { return b.msgs }

// Error is why the request ended, once Messages is closed: nil when it was
// filled or expired.
func (b *pullBatch) Error() error { return b.err }

// newPullInbox returns a pullInbox for the given stream and durable consumer.
func newPullInbox(nc *nats.Conn, stream, consumer string, onStray func(jetstream.Msg)) *pullInbox {
	return &pullInbox{nc: nc, next: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, onStray: onStray, all: map[*inboxSub]struct{}{}}
}

// take returns a subscription with no open request, subscribing a new one
// when none is free.
func (in *pullInbox) take() (*inboxSub, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil, nats.ErrConnectionClosed
	}
	if n := len(in.free); n > 0 {
		s := in.free[n-1]
		in.free = in.free[:n-1]
		return s, nil
	}
	s := &inboxSub{in: in, subject: in.nc.NewInbox()}
	sub, err := in.nc.Subscribe(s.subject, s.dispatch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to a pull inbox: %w", err)
	}
	// A request never asks for more than the process may hold.
	_ = sub.SetPendingLimits(-1, -1)
	s.sub = sub
	in.all[s] = struct{}{}
	return s, nil
}

// put returns a subscription whose request ended. One whose request ended
// without the server's word (it may still answer) is dropped instead, so
// that a late answer cannot be taken for the next request's.
func (in *pullInbox) put(s *inboxSub, reuse bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if reuse && !in.closed {
		in.free = append(in.free, s)
		return
	}
	delete(in.all, s)
	_ = s.sub.Unsubscribe()
}

// close unsubscribes the pool. A message still coming is delivered to no
// one and returns to the stream after AckWait: call it after every request
// ended.
func (in *pullInbox) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	for s := range in.all {
		_ = s.sub.Unsubscribe()
	}
	in.all, in.free = map[*inboxSub]struct{}{}, nil
}

// dispatch routes a message on the inbox to its request's batch.
func (s *inboxSub) dispatch(m *nats.Msg) {
	s.mu.Lock()
	b := s.current
	s.mu.Unlock()
	if b == nil {
		if strings.HasPrefix(m.Reply, ackPrefix) {
			s.in.stray(&pulledMsg{m: m, nc: s.in.nc})
		}
		return // a status about a request that is over
	}
	b.receive(m)
}

// stray hands back a task that came after its request ended on this side.
func (in *pullInbox) stray(msg jetstream.Msg) {
	if in.onStray != nil {
		in.onStray(msg)
	} else {
		_ = msg.Nak()
	}
}

// fetchTo asks for up to n messages of at most maxBytes in all (0: no
// limit), waiting at most wait for them. Each message goes to arrive as it comes
// (on the subscription's goroutine: arrive must not block), then end is
// told why the request ended (nil: filled or expired), once. When fetchTo
// fails, neither is called.
func (in *pullInbox) fetchTo(n int, maxBytes int64, wait time.Duration, arrive func(jetstream.Msg), end func(error)) error {
	_, err := in.send(&pullBatch{in: in, remaining: n, arrive: arrive, end: end}, maxBytes, wait)
	return err
}

// send makes b's request.
func (in *pullInbox) send(b *pullBatch, maxBytes int64, wait time.Duration) (*pullBatch, error) {
	body, _ := json.Marshal(struct {
		Batch    int           `json:"batch"`
		MaxBytes int64         `json:"max_bytes,omitempty"`
		Expires  time.Duration `json:"expires"`
	}{b.remaining, maxBytes, wait})
	s, err := in.take()
	if err != nil {
		return nil, err
	}
	b.on = s
	b.mu.Lock() // until the timer is in place
	defer b.mu.Unlock()
	s.mu.Lock()
	s.current = b
	s.mu.Unlock()
	// The server ends the request after wait with a 408; should that be
	// lost (a dropped connection), end it here a little later.
	b.timer = time.AfterFunc(wait+time.Second, func() { b.finish(errPullUnanswered) })
	if err := in.nc.PublishRequest(in.next, s.subject, body); err != nil {
		b.end = nil // the caller learns it from the error
		b.finishLocked(err)
		return nil, err
	}
	return b, nil
}

func (b *pullBatch) finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finishLocked(err)
}

// finishLocked ends the batch; b.mu must be held.
func (b *pullBatch) finishLocked(err error) {
	if b.done {
		return
	}
	b.done = true
	b.timer.Stop()
	if s := b.on; s != nil {
		s.mu.Lock()
		s.current = nil
		s.mu.Unlock()
		// The server has had its last word on the request unless this side
		// gave up waiting, or the request may not have been sent.
		b.in.put(s, err == nil || !errors.Is(err, errPullUnanswered) && !isSendError(err))
	}
	b.err = err
	if b.msgs != nil {
		close(b.msgs)
	}
	if b.end != nil {
		b.end(err)
	}
}

// receive takes one message on the batch's inbox: a delivered task, or a
// status of the server about the request.
func (b *pullBatch) receive(m *nats.Msg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.HasPrefix(m.Reply, ackPrefix) {
		msg := &pulledMsg{m: m, nc: b.in.nc}
		if b.done {
			// The request already ended on this side: hand the message
			// straight back rather than let it wait out AckWait.
			b.in.stray(msg)
			return
		}
		if b.arrive != nil {
			b.arrive(msg)
		} else {
			b.msgs <- msg // never blocks: the channel holds the whole batch
		}
		if b.remaining--; b.remaining == 0 {
			b.finishLocked(nil)
		}
		return
	}
	code, desc := m.Header.Get("Status"), m.Header.Get("Description")
	if b.done || code == "" || len(m.Data) > 0 {
		// A status about a request that is over, or not a status at all
		// (nothing but the server should publish here): ignore it.
		return
	}
	switch code {
	case "100": // heartbeat or flow control: the request goes on
	case "409":
		if desc == "Batch Completed" {
			// The batch's count is met with max_bytes left. The server sends
			// this right after the last message, but on a cluster it can
			// arrive first: the batch ends when that message arrives.
			return
		}
		b.finishLocked(&PullError{Status: code, Description: desc})
	case "404", "408": // no messages, or the request expired
		b.finishLocked(nil)
	case "503":
		b.finishLocked(nats.ErrNoResponders)
	default:
		b.finishLocked(&PullError{Status: code, Description: desc})
	}
}

// PullError is a pull request that the server ended with a status, e.g.
// 409 "Leadership Change" or "Consumer Deleted".
type PullError struct {
	Status      string
	Description string
}

// exceedsMaxBytes reports the status the server ends a request with when
// its next message is larger than what is left of the request's max_bytes.
func exceedsMaxBytes(err error) bool {
	var pe *PullError
	return errors.As(err, &pe) && pe.Status == "409" && strings.Contains(pe.Description, "Message Size Exceeds MaxBytes")
}

// Error implements error.
func (e *PullError) Error() string {
	return "pull request ended by the server: " + e.Status + " " + e.Description
}

// pulledMsg is a message JetStream delivered for a pull request. It is a
// jetstream.Msg with the same acknowledgement protocol as nats.go's.
type pulledMsg struct {
	m      *nats.Msg
	nc     *nats.Conn
	mu     sync.Mutex
	ackd   bool
	acking bool // a final reply is on its way
}

var _ jetstream.Msg = (*pulledMsg)(nil)

// Metadata parses the delivery's reply subject.
func (p *pulledMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := p.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered, NumPending: md.NumPending, Timestamp: md.Timestamp,
		Stream: md.Stream, Consumer: md.Consumer, Domain: md.Domain,
	}, nil
}

// Data returns the body.
func (p *pulledMsg) Data() []byte { return p.m.Data }

// Headers returns the headers.
func (p *pulledMsg) Headers() nats.Header { return p.m.Header }

// Subject returns the subject the task was published on.
func (p *pulledMsg) Subject() string { return p.m.Subject }

// Reply returns the acknowledgement subject.
func (p *pulledMsg) Reply() string { return p.m.Reply }

// Ack acknowledges the message without waiting for the server.
func (p *pulledMsg) Ack() error { return p.send("+ACK", true) }

// DoubleAck acknowledges the message and waits for the server to confirm.
func (p *pulledMsg) DoubleAck(ctx context.Context) error { return p.request(ctx, "+ACK") }

// Nak asks for redelivery now.
func (p *pulledMsg) Nak() error { return p.send("-NAK", true) }

// NakWithDelay asks for redelivery after delay.
func (p *pulledMsg) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return p.Nak()
	}
	return p.send(fmt.Sprintf(`-NAK {"delay": %d}`, delay.Nanoseconds()), true)
}

// InProgress resets the AckWait timer; it may be sent many times.
func (p *pulledMsg) InProgress() error { return p.send("+WPI", false) }

// Term stops redelivery; on a WorkQueue stream it deletes the message.
func (p *pulledMsg) Term() error { return p.send("+TERM", true) }

// TermWithReason is Term with a reason shown in the server's advisory.
func (p *pulledMsg) TermWithReason(reason string) error {
	if reason == "" {
		return p.Term()
	}
	return p.send("+TERM "+reason, true)
}

// send sends an acknowledgement without waiting for the server; request
// sends a final one and waits for the server's answer. A final one (all
// but +WPI) may be sent once. The lock is not held while a request waits
// for its answer, so that a slow ack holds up nothing else (the keep-alive
// sweep); progress while a final reply is on its way is not sent.
func (p *pulledMsg) send(body string, final bool) error {
	return p.reply(final, func() error { return p.nc.Publish(p.m.Reply, []byte(body)) })
}

func (p *pulledMsg) request(ctx context.Context, body string) error {
	return p.reply(true, func() error {
		_, err := p.nc.RequestWithContext(ctx, p.m.Reply, []byte(body))
		return err
	})
}

func (p *pulledMsg) reply(final bool, deliver func() error) error {
	p.mu.Lock()
	switch {
	case p.ackd, final && p.acking:
		p.mu.Unlock()
		return jetstream.ErrMsgAlreadyAckd
	case p.acking: // progress during an ack: not needed
		p.mu.Unlock()
		return nil
	}
	p.acking = final
	p.mu.Unlock()
	err := deliver()
	p.mu.Lock()
	defer p.mu.Unlock()
	if final {
		p.acking = false
		p.ackd = err == nil
	}
	return err
}

// isSendError reports an error of sending a request, after which it is
// unknown whether the server got it.
func isSendError(err error) bool {
	var pe *PullError
	return !errors.As(err, &pe) && !errors.Is(err, nats.ErrNoResponders)
}

// isPullTimeout reports an error that only means no messages came in time.
func isPullTimeout(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
}

// errPullUnanswered ends a pull request the server never ended: its
// expiry status (or the request itself) was lost, e.g. with a connection
// to a server that went away. It is a timeout (isPullTimeout).
var errPullUnanswered = fmt.Errorf("the server never answered the pull request (lost with a connection or a server): %w", nats.ErrTimeout)

// Causes of failed pull requests, the values of the "cause" label of
// nodeq_pull_failures_total: a small fixed set.
const (
	// PullNoResponders: nothing serves the consumer's pull requests. In a
	// cluster, the consumer's leader was lost and a new one is being
	// elected (a few seconds); otherwise the consumer does not exist.
	PullNoResponders = "no_responders"
	// PullLeadershipChange: the server ended the request because the
	// consumer's leader changed (409 Leadership Change).
	PullLeadershipChange = "leadership_change"
	// PullConsumerDeleted: the server ended the request because the
	// consumer was deleted, or moved away from the server (409 Consumer Deleted).
	PullConsumerDeleted = "consumer_deleted"
	// PullServerShutdown: the server leading the consumer is shutting down
	// (409 Server Shutdown); a new leader takes over.
	PullServerShutdown = "server_shutdown"
	// PullTimeout: the server never ended the request; the request or its
	// answer was lost with a connection or a server.
	PullTimeout = "timeout"
	// PullDisconnected: the request could not be sent: the connection is
	// closed or being re-established.
	PullDisconnected = "disconnected"
	// PullStatus: the server ended the request with another status (e.g.
	// 409 Exceeded MaxWaiting, 400 Bad Request).
	PullStatus = "other_status"
	// PullOther: any other error.
	PullOther = "other"
)

// PullFailureCause classifies why a pull request failed, as one of the
// Pull* causes.
func PullFailureCause(err error) string {
	var pe *PullError
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return PullNoResponders
	case errors.As(err, &pe):
		switch d := strings.ToLower(pe.Description); {
		case pe.Status == "503":
			return PullNoResponders
		case strings.Contains(d, "leadership change"):
			return PullLeadershipChange
		case strings.Contains(d, "consumer deleted"):
			return PullConsumerDeleted
		case strings.Contains(d, "server shutdown"):
			return PullServerShutdown
		}
		return PullStatus
	case errors.Is(err, errPullUnanswered), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return PullTimeout
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return PullDisconnected
	}
	return PullOther
}

// explainPullFailure says in words what a cause means for the log.
func explainPullFailure(cause string) string {
	switch cause {
	case PullNoResponders:
		return "no responders: the consumer has no leader (a leader election after a server was lost, usually seconds) or does not exist"
	case PullLeadershipChange:
		return "the consumer's leader changed and ended the request"
	case PullConsumerDeleted:
		return "the server says the consumer was deleted or moved off it"
	case PullServerShutdown:
		return "the server serving the consumer is shutting down; another takes over"
	case PullTimeout:
		return "the server never answered the request: it or its answer was lost with a connection or a server"
	case PullDisconnected:
		return "the connection to NATS is down"
	case PullStatus:
		return "the server ended the request with a status"
	}
	return "the pull request failed"
}
