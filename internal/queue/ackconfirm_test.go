package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lostFirstAck loses its first ack, as a dropped connection would.
type lostFirstAck struct {
	*pulledMsg
	lost bool
}

func (m *lostFirstAck) AckRequest(reply string) error {
	if !m.lost {
		m.lost = true
		return nil
	}
	return m.pulledMsg.AckRequest(reply)
}

// Acks are confirmed off the worker's path; one lost is sent again and
// confirmed; one the server never answers is given up on after
// GiveUpAfter. Each outcome is reported once, and the acked tasks are gone.
func TestAckConfirmer(t *testing.T) {
	nc, js, names, cons := testDurable(t)
	ctx := context.Background()
	const n = 50
	for i := range n {
		if _, err := js.Publish(ctx, names.TaskSubject("echo"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	resends := 0
	var mu sync.Mutex
	a, err := NewAckConfirmer(nc, AckOptions{ResendAfter: 50 * time.Millisecond, GiveUpAfter: 500 * time.Millisecond,
		OnResend: func() { mu.Lock(); resends++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		confirmed bool
		resends   int
	}
	outcomes := make(chan outcome, n+2)
	info := cons.CachedInfo()
	in := newPullInbox(nc, info.Stream, info.Name, nil)
	defer in.close()
	got := 0
	for got < n {
		b, err := in.fetch(n-got, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for msg := range b.Messages() {
			var m jetstream.Msg = msg
			if got == 0 {
				m = &lostFirstAck{pulledMsg: msg.(*pulledMsg)}
			}
			got++
			if err := a.Ack(m, func(ok bool, r int) { outcomes <- outcome{ok, r} }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An ack to a delivery the server does not know is never confirmed;
	// nor is one nothing serves (the server answers 503, as while a
	// consumer elects its leader).
	for _, reply := range []string{"$JS.ACK.NODEQ_TASKS.nodeq-workers.1.999999.999999.0.0", "$JS.ACK.NOSTREAM.NOCONSUMER.1.1.1.1.0"} {
		bogus := &pulledMsg{m: &nats.Msg{Reply: reply}, nc: nc}
		if err := a.Ack(bogus, func(ok bool, r int) { outcomes <- outcome{ok, r} }); err != nil {
			t.Fatal(err)
		}
	}
	confirmed, resent, lost := 0, 0, 0
	for range n + 2 {
		select {
		case o := <-outcomes:
			switch {
			case !o.confirmed:
				lost++
			case o.resends > 0:
				resent++
			default:
				confirmed++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("outcomes missing: confirmed %d, resent %d, given up %d", confirmed, resent, lost)
		}
	}
	if confirmed != n-1 || resent != 1 || lost != 2 {
		t.Fatalf("confirmed %d, confirmed after a resend %d, given up %d; want %d, 1, 2", confirmed, resent, lost, n-1)
	}
	mu.Lock()
	if resends < 2 { // the lost one once, the bogus one until given up
		t.Errorf("OnResend told %d times", resends)
	}
	mu.Unlock()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Ack(&pulledMsg{m: &nats.Msg{Reply: "$JS.ACK.x"}, nc: nc}, func(bool, int) { t.Error("called after Close") }); err == nil {
		t.Fatal("Ack after Close accepted")
	}
	if err := a.Close(ctx); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if ci, err := cons.Info(ctx); err != nil || ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Fatalf("after the acks: %+v, %v", ci, err)
	}
	select {
	case o := <-outcomes:
		t.Fatalf("an outcome reported twice: %+v", o)
	default:
	}
}

// A final reply waiting for its answer holds nothing else up: progress on
// the same message returns at once (the keep-alive sweep, which goes
// through every held message, must not wait behind one slow ack), and a
// second final reply is refused while the first is on its way.
func TestSlowAckHoldsNothing(t *testing.T) {
	nc, _ := testServer(t)
	answer := make(chan struct{})
	got := make(chan string, 4)
	// Stands for the server's $JS.ACK handling: it answers the ack only
	// when the test says so.
	if _, err := nc.Subscribe("$JS.ACK.S.C.>", func(m *nats.Msg) {
		got <- string(m.Data)
		if m.Reply != "" {
			<-answer
			_ = m.Respond(nil)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	msg := &pulledMsg{m: &nats.Msg{Reply: "$JS.ACK.S.C.1.1.1.1.0"}, nc: nc}
	acked := make(chan error, 1)
	go func() { acked <- msg.DoubleAck(context.Background()) }()
	if body := <-got; body != "+ACK" {
		t.Fatalf("sent %q, want +ACK", body)
	}
	// The ack waits for its answer; progress and a second ack do not wait.
	if err := msg.InProgress(); err != nil {
		t.Fatalf("progress during an ack: %v", err)
	}
	if err := msg.Nak(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Fatalf("a second final reply during the ack: %v; want ErrMsgAlreadyAckd", err)
	}
	close(answer)
	if err := <-acked; err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := msg.InProgress(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Fatalf("progress after the ack: %v; want ErrMsgAlreadyAckd", err)
	}
}
