package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fetch is fetchTo with the messages on a channel (Messages), for tests
// that read a request's answer in order.
func (in *pullInbox) fetch(n int, maxBytes int64, wait time.Duration) (*pullBatch, error) {
	return in.send(&pullBatch{in: in, msgs: make(chan jetstream.Msg, n), remaining: n}, maxBytes, wait)
}

// newTestBatch is a pullBatch for n messages without a server.
func newTestBatch(nc *nats.Conn, n int) *pullBatch {
	return &pullBatch{in: &pullInbox{nc: nc}, msgs: make(chan jetstream.Msg, n), remaining: n, timer: time.NewTimer(time.Hour)}
}

func statusMsg(code, desc string) *nats.Msg {
	m := nats.NewMsg("_NODEQ_INBOX.x")
	m.Header.Set("Status", code)
	if desc != "" {
		m.Header.Set("Description", desc)
	}
	return m
}

// A delivered task is told from a server status by its $JS.ACK reply
// subject, never by its content: an empty task with a Status header is a task.
func TestPullBatchTellsTasksFromStatuses(t *testing.T) {
	lookalike := statusMsg("408", "Request Timeout")
	lookalike.Subject, lookalike.Reply = "tasks.echo", "$JS.ACK.NODEQ_TASKS.nodeq-workers.1.7.7.1795915963052310950.0"
	cases := []struct {
		name    string
		msgs    []*nats.Msg
		tasks   int
		ended   bool
		wantErr error
	}{
		{"status lookalike task", []*nats.Msg{lookalike}, 1, false, nil},
		{"heartbeat goes on", []*nats.Msg{statusMsg("100", "Idle Heartbeat")}, 0, false, nil},
		{"expired", []*nats.Msg{statusMsg("408", "Request Timeout")}, 0, true, nil},
		{"no messages", []*nats.Msg{statusMsg("404", "No Messages")}, 0, true, nil},
		{"no responders", []*nats.Msg{statusMsg("503", "")}, 0, true, nats.ErrNoResponders},
		{"leadership change", []*nats.Msg{statusMsg("409", "Leadership Change")}, 0, true, &PullError{}},
		// On a cluster "Batch Completed" can come before the batch's last message.
		{"batch completed before its last message", []*nats.Msg{lookalike, statusMsg("409", "Batch Completed"), lookalike}, 2, true, nil},
		{"batch completed goes on", []*nats.Msg{statusMsg("409", "Batch Completed")}, 0, false, nil},
		{"not a status at all", []*nats.Msg{nats.NewMsg("_NODEQ_INBOX.x")}, 0, false, nil},
		{"filled", []*nats.Msg{lookalike, lookalike}, 2, true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newTestBatch(nil, 2)
			for _, m := range c.msgs {
				b.receive(m)
			}
			if len(b.msgs) != c.tasks || b.done != c.ended {
				t.Fatalf("%d tasks, ended %v; want %d, %v", len(b.msgs), b.done, c.tasks, c.ended)
			}
			var pe *PullError
			switch {
			case c.wantErr == nil && b.err != nil:
				t.Fatalf("error %v", b.err)
			case errors.As(c.wantErr, &pe) && !errors.As(b.err, &pe):
				t.Fatalf("error %v, want a PullError", b.err)
			case c.wantErr != nil && !errors.As(c.wantErr, &pe) && !errors.Is(b.err, c.wantErr):
				t.Fatalf("error %v, want %v", b.err, c.wantErr)
			}
		})
	}
}

// The acknowledgements a pulled message sends are JetStream's, and a final
// one is sent once.
func TestPulledMsgAckProtocol(t *testing.T) {
	nc, _ := testServer(t)
	got, err := nc.SubscribeSync("$JS.ACK.S.C.>")
	if err != nil {
		t.Fatal(err)
	}
	msg := func() *pulledMsg {
		return &pulledMsg{m: &nats.Msg{Subject: "tasks.echo", Reply: "$JS.ACK.S.C.1.2.3.4.5"}, nc: nc}
	}
	steps := []struct {
		send func(*pulledMsg) error
		body string
	}{
		{func(p *pulledMsg) error { return p.InProgress() }, "+WPI"},
		{func(p *pulledMsg) error { return p.NakWithDelay(5 * time.Second) }, `-NAK {"delay": 5000000000}`},
		{func(p *pulledMsg) error { return p.TermWithReason("invalid") }, "+TERM invalid"},
		{func(p *pulledMsg) error { return p.Ack() }, "+ACK"},
	}
	for _, s := range steps {
		p := msg()
		if err := s.send(p); err != nil {
			t.Fatal(err)
		}
		m, err := got.NextMsg(2 * time.Second)
		if err != nil || string(m.Data) != s.body {
			t.Fatalf("sent %q (%v), want %q", m.Data, err, s.body)
		}
		if s.body != "+WPI" {
			if err := p.Nak(); err == nil {
				t.Fatalf("a second final acknowledgement after %q was sent", s.body)
			}
		}
	}
	_ = got.Unsubscribe() // nobody answers now
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := msg().DoubleAck(ctx); err == nil {
		t.Fatal("DoubleAck without the server's confirmation succeeded")
	}
}

// Every failed pull is named by one of a small fixed set of causes.
func TestPullFailureCause(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nats.ErrNoResponders, PullNoResponders},
		{&PullError{Status: "503"}, PullNoResponders},
		{&PullError{Status: "409", Description: "Leadership Change"}, PullLeadershipChange},
		{&PullError{Status: "409", Description: "Consumer Deleted"}, PullConsumerDeleted},
		{&PullError{Status: "409", Description: "Server Shutdown"}, PullServerShutdown},
		{&PullError{Status: "409", Description: "Exceeded MaxWaiting"}, PullStatus},
		{errPullUnanswered, PullTimeout},
		{nats.ErrConnectionClosed, PullDisconnected},
		{errors.New("something else"), PullOther},
	}
	for _, c := range cases {
		if got := PullFailureCause(c.err); got != c.want {
			t.Errorf("PullFailureCause(%v) = %s; want %s", c.err, got, c.want)
		}
	}
	if !isPullTimeout(errPullUnanswered) {
		t.Error("an unanswered pull request is not a timeout")
	}
}
