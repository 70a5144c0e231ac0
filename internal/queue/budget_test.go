package queue

import (
	"context"
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
)

func TestByteBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var used int64
		b := newByteBudget(100, func(n int64) { used = n })
		ctx := context.Background()
		if n, err := b.reserve(ctx, 30, 50); n != 50 || err != nil {
			t.Fatalf("reserve = %d, %v; want 50", n, err)
		}
		if n, _ := b.reserve(ctx, 30, 90); n != 50 {
			t.Fatalf("reserve of more than is free = %d; want the 50 left", n)
		}
		got := make(chan int64)
		go func() {
			n, _ := b.reserve(ctx, 30, 30)
			got <- n
		}()
		synctest.Wait()
		select {
		case n := <-got:
			t.Fatalf("reserved %d with nothing free", n)
		default:
		}
		b.release(20) // not enough for 30
		synctest.Wait()
		select {
		case n := <-got:
			t.Fatalf("reserved %d with 20 free", n)
		default:
		}
		b.release(20)
		if n := <-got; n != 30 {
			t.Fatalf("reserved %d after release; want 30", n)
		}
		if used != 90 || b.inUse() != 90 {
			t.Fatalf("in use %d (reported %d); want 90", b.inUse(), used)
		}
		cctx, cancel := context.WithCancel(ctx)
		go func() { time.Sleep(time.Second); cancel() }()
		if _, err := b.reserve(cctx, 30, 30); err == nil {
			t.Fatal("reserve did not end with its context")
		}
	})
}

func TestReservationReturnsEverything(t *testing.T) {
	b := newByteBudget(1000, nil)
	n, _ := b.reserve(context.Background(), 100, 300)
	r := &reservation{b: b, left: n}
	held := []int64{r.take(120), r.take(120), r.take(120)}
	if held[0] != 120 || held[1] != 120 || held[2] != 60 {
		t.Fatalf("held %v; want 120, 120 and the 60 left", held)
	}
	r.end()
	for _, h := range held {
		b.release(h)
	}
	if b.inUse() != 0 {
		t.Fatalf("%d bytes still in use", b.inUse())
	}
	var none *reservation // no budget
	if none.take(10) != 0 {
		t.Fatal("a nil reservation holds bytes")
	}
	none.end()
}

// wireSize is what the server counts against max_bytes: a pull request of
// exactly that many bytes gets the message, one byte less gets a 409.
func TestWireSizeMatchesServer(t *testing.T) {
	nc, js, names, cons := testDurable(t)
	ctx := context.Background()
	m := nats.NewMsg(names.TaskSubject("echo"))
	m.Data = []byte("some task body")
	m.Header.Set("Content-Type", "application/json")
	m.Header.Set("Nats-Msg-Id", "t-1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	info := cons.CachedInfo()
	inbox := newPullInbox(nc, info.Stream, info.Name, nil)
	pull := func(maxBytes int64) (*pulledMsg, error) {
		b, err := inbox.fetch(1, maxBytes, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for msg := range b.Messages() {
			return msg.(*pulledMsg), nil
		}
		return nil, b.Error()
	}
	// The first delivery tells the size; hand it back and pull with limits.
	first, err := pull(0)
	if err != nil || first == nil {
		t.Fatalf("pull: %v", err)
	}
	size := wireSize(first.m)
	_ = first.Nak()
	// The server counts the reply subject of the delivery it is about to
	// make, which ends in the delivery count: one digit more or less than
	// the first delivery's changes nothing here.
	if msg, err := pull(size - 1); msg != nil || !exceedsMaxBytes(err) {
		b, _ := json.Marshal(first.m.Header)
		t.Fatalf("max_bytes %d (one less than wireSize): got a message %v, err %v; headers %s", size-1, msg != nil, err, b)
	}
	if msg, err := pull(size); msg == nil {
		t.Fatalf("max_bytes %d (wireSize): no message, err %v", size, err)
	}
}
