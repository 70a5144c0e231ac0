package queue

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// waitingRoom holds the tasks a Puller prefetched: delivered, and waiting
// for a worker. While they wait they are kept alive (InProgress), so that
// JetStream does not deliver them elsewhere; when the breaker opens or
// shutdown begins they are handed back at once, so that healthy processes
// take them.
type waitingRoom struct {
	mu     sync.Mutex
	queue  []waitingMsg
	closed bool
	// ready has a token for every put; a take that finds the queue emptied
	// by a hand-back takes the next token.
	ready   chan struct{}
	onCount func(int) // told the number waiting after each change
}

// waitingMsg is a prefetched message and when it last told the server it
// is in progress.
type waitingMsg struct {
	heldMsg
	touched time.Time
}

// newWaitingRoom returns a room for at most capacity messages at once.
func newWaitingRoom(capacity int, onCount func(int)) *waitingRoom {
	if onCount == nil {
		onCount = func(int) {}
	}
	return &waitingRoom{ready: make(chan struct{}, capacity), onCount: onCount}
}

// put adds a message; it reports false, and keeps nothing, once the room
// is closed. It never blocks: the Puller pulls no more than the room and
// its workers hold.
func (r *waitingRoom) put(h heldMsg, now time.Time) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.queue = append(r.queue, waitingMsg{heldMsg: h, touched: now})
	n := len(r.queue)
	// Under the lock, so that close cannot close ready first. It does not
	// block: ready never holds more tokens than the queue has messages.
	r.ready <- struct{}{}
	r.onCount(n) // under the lock, so that counts are told in order
	r.mu.Unlock()
	return true
}

// take waits for the oldest message. It reports false when the room is
// closed and empty, or stop is closed.
func (r *waitingRoom) take(stop <-chan struct{}) (heldMsg, bool) {
	for {
		select {
		case <-r.ready:
		case <-stop:
			return heldMsg{}, false
		}
		r.mu.Lock()
		if len(r.queue) == 0 {
			closed := r.closed
			r.mu.Unlock()
			if closed {
				return heldMsg{}, false
			}
			continue // emptied by a hand-back
		}
		h := r.queue[0].heldMsg
		h.since = r.queue[0].touched // when it last told the server
		r.queue[0] = waitingMsg{}
		r.queue = r.queue[1:]
		r.onCount(len(r.queue))
		r.mu.Unlock()
		return h, true
	}
}

// empty removes and returns every waiting message.
func (r *waitingRoom) empty() []heldMsg {
	r.mu.Lock()
	out := make([]heldMsg, 0, len(r.queue))
	for _, w := range r.queue {
		out = append(out, w.heldMsg)
	}
	r.queue = nil
	if !r.closed {
		// Drop their tokens; a take that holds one already finds the queue
		// empty and waits again.
		for range out {
			select {
			case <-r.ready:
			default:
			}
		}
	}
	if len(out) > 0 {
		r.onCount(0)
	}
	r.mu.Unlock()
	return out
}

// close refuses further puts and wakes every take; it returns the
// messages still waiting, which the caller hands back.
func (r *waitingRoom) close() []heldMsg {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	out := make([]heldMsg, 0, len(r.queue))
	for _, w := range r.queue {
		out = append(out, w.heldMsg)
	}
	r.queue = nil
	r.closed = true
	close(r.ready)
	r.onCount(0)
	r.mu.Unlock()
	return out
}

// stale returns the messages that last told the server they are in
// progress before since, and marks them as told now. The caller sends
// InProgress for each.
func (r *waitingRoom) stale(since, now time.Time) []jetstream.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []jetstream.Msg
	for i := range r.queue {
		if r.queue[i].touched.Before(since) {
			r.queue[i].touched = now
			out = append(out, r.queue[i].msg)
		}
	}
	return out
}

// keepAlive sends InProgress for each message; one already settled
// elsewhere is skipped.
func keepAlive(msgs []jetstream.Msg) (failed error) {
	for _, m := range msgs {
		if err := m.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			failed = err
		}
	}
	return failed
}
