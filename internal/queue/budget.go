package queue

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
)

// byteBudget bounds the bytes of task messages a process holds or has
// asked the server for. A pull request reserves bytes before it is sent
// (its max_bytes); each message it brings keeps its own size until its
// handler returns, and what the request did not use goes back when it ends.
type byteBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	changed chan struct{} // closed when bytes are released; made only while someone waits
	onUse   func(used int64)
}

// newByteBudget returns a budget of limit bytes; onUse, if set, is told the
// bytes in use after every change.
func newByteBudget(limit int64, onUse func(int64)) *byteBudget {
	return &byteBudget{limit: limit, onUse: onUse}
}

// reserve waits until at least least bytes are free, then takes up to want
// (never less than least, never more than is free) and returns how many.
// least must not exceed the limit.
func (b *byteBudget) reserve(ctx context.Context, least, want int64) (int64, error) {
	for {
		b.mu.Lock()
		free := b.limit - b.used
		if free >= least {
			n := min(max(want, least), free)
			b.used += n
			b.report()
			b.mu.Unlock()
			return n, nil
		}
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// force takes n bytes whether or not they are free: a message that came
// for a request without a byte limit is counted all the same.
func (b *byteBudget) force(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used += n
	b.report()
}

// release gives n bytes back.
func (b *byteBudget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.report()
	if b.changed != nil { // someone waits: wake them
		close(b.changed)
		b.changed = nil
	}
}

// inUse returns the bytes reserved or held.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *byteBudget) report() {
	if b.onUse != nil {
		b.onUse(b.used)
	}
}

// reservation is one pull request's share of the budget: the messages it
// brings take their sizes out of it, and end returns the rest.
type reservation struct {
	b         *byteBudget
	left      int64
	unbounded bool // a request without max_bytes: its messages are forced in
	mu        sync.Mutex
}

// take returns how many of the reservation's bytes a message of size
// bytes keeps until its handler returns.
func (r *reservation) take(size int64) int64 {
	if r == nil {
		return 0
	}
	if r.unbounded {
		r.b.force(size)
		return size
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(size, r.left)
	r.left -= n
	return n
}

// end returns what no message took.
func (r *reservation) end() {
	if r == nil {
		return
	}
	r.mu.Lock()
	n := r.left
	r.left = 0
	r.mu.Unlock()
	r.b.release(n)
}

// PullMsgBytes is the largest size a delivered task message can have as
// the server counts it against max_bytes, for a stream whose max_msg_size
// (headers and body) is maxMsgSize: room is added for the subject (at most
// the server's 4 KiB control line) and the $JS.ACK reply subject.
func PullMsgBytes(maxMsgSize int64) int64 { return maxMsgSize + 8<<10 }

// wireSize is a delivered message's size as the server counts it against
// a pull request's max_bytes: subject, reply subject, headers and body.
func wireSize(m *nats.Msg) int64 {
	n := len(m.Subject) + len(m.Reply) + len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(": \r\n") + len(v)
			}
		}
	}
	return int64(n)
}
