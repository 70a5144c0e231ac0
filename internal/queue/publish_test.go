package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/task"
)

func echoTasks(prefix string, n int) func(func(*task.Envelope) bool) {
	return func(yield func(*task.Envelope) bool) {
		for i := range n {
			if !yield(&task.Envelope{ID: fmt.Sprintf("%s%d", prefix, i), NodeType: "echo"}) {
				return
			}
		}
	}
}

// Every PubAck wait of PublishAll ends: at the ack timeout when nothing
// answers, with the tasks reported Unconfirmed; when ctx ends, likewise.
// Tasks a stream stores are confirmed.
func TestPublishAllAckTimeout(t *testing.T) {
	nc, _ := testServer(t)
	// No stream, but a plain subscriber: the server answers nothing.
	if _, err := nc.Subscribe("tasks.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	pub := NewPublisher(js, DefaultNames()).WithAckTimeout(200 * time.Millisecond)

	collect := func(ctx context.Context, p *Publisher, prefix string, n int) ([]Outcome, error) {
		var got []Outcome
		err := p.PublishAll(ctx, echoTasks(prefix, n), 2, func(o Outcome) { got = append(got, o) })
		return got, err
	}
	start := time.Now()
	got, err := collect(context.Background(), pub, "t", 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("%d outcomes, %v", len(got), err)
	}
	for i, o := range got {
		if o.Ack != nil || !o.Unconfirmed || !errors.Is(o.Err, jetstream.ErrAsyncPublishTimeout) || o.Task.ID != fmt.Sprintf("t%d", i) {
			t.Fatalf("outcome %d: %+v, want task t%d unconfirmed after the ack timeout", i, o, i)
		}
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("took %v", took)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	got, err = collect(ctx, pub.WithAckTimeout(time.Hour), "c", 1000)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) == 0 {
		t.Fatalf("cancelled: %d outcomes, %v", len(got), err)
	}
	for i, o := range got {
		if o.Ack != nil || o.Err == nil || o.Task.ID != fmt.Sprintf("c%d", i) {
			t.Fatalf("cancelled outcome %d: %+v", i, o)
		}
		if i < len(got)-1 && !o.Unconfirmed {
			t.Fatalf("cancelled outcome %d: a sent task not reported unconfirmed: %v", i, o.Err)
		}
	}

	if err := EnsureStreams(context.Background(), js, DefaultNames(), StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err = collect(context.Background(), pub, "s", 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("with a stream: %d outcomes, %v", len(got), err)
	}
	for i, o := range got {
		if o.Ack == nil || o.Err != nil || o.Unconfirmed {
			t.Fatalf("with a stream, outcome %d: %+v", i, o)
		}
	}
}
