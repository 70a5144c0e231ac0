package queue

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nodeq/nodeq/internal/task"
)

// Header names nodeq sets on task messages.
const (
	HeaderContentType = "Content-Type"
	HeaderMsgID       = jetstream.MsgIDHeader
)

var contentTypeMsgpack = []string{task.ContentTypeMsgpack}

// Publisher publishes tasks onto their subjects in the task stream.
type Publisher struct {
	js    jetstream.JetStream
	names Names
}

// NewPublisher returns a publisher for the given stream names.
func NewPublisher(js jetstream.JetStream, names Names) *Publisher {
	return &Publisher{js: js, names: names.WithDefaults()}
}

// NewTaskID returns a new unique task ID.
func NewTaskID() string { return nuid.Next() }

// Message builds the NATS message of a task: the msgpack envelope on
// tasks.<node_type>, with Nats-Msg-Id set to the task ID so that JetStream
// drops a re-publish of the same task within its duplicate window. A task
// without an ID or creation time gets one.
func (p *Publisher) Message(env *task.Envelope) (*nats.Msg, error) {
	if env.ID == "" {
		env.ID = NewTaskID()
	}
	if env.CreatedAt.IsZero() {
		env.CreatedAt = time.Now().UTC()
	}
	if err := env.Validate(); err != nil {
		return nil, err
	}
	data, err := task.EncodeMsgpack(env)
	if err != nil {
		return nil, err
	}
	// Both header names are already in canonical form: assign, do not Set.
	return &nats.Msg{Subject: p.names.TaskSubject(env.NodeType), Data: data,
		Header: nats.Header{HeaderContentType: contentTypeMsgpack, HeaderMsgID: {env.ID}}}, nil
}

// Publish publishes one task and waits for JetStream's acknowledgement.
func (p *Publisher) Publish(ctx context.Context, env *task.Envelope) (*jetstream.PubAck, error) {
	msg, err := p.Message(env)
	if err != nil {
		return nil, err
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish task %s to %s: %w", env.ID, msg.Subject, err)
	}
	return ack, nil
}

// Outcome is the result of publishing one task of a batch.
type Outcome struct {
	Task *task.Envelope
	Ack  *jetstream.PubAck
	Err  error
}

// PublishAll publishes tasks asynchronously with at most window of them
// awaiting their acknowledgement, and calls report once per task, in order,
// after its PubAck or failure. It returns when every task is reported or ctx
// is done (tasks not yet published are then not reported).
func (p *Publisher) PublishAll(ctx context.Context, tasks iter.Seq[*task.Envelope], window int, report func(Outcome)) error {
	if window <= 0 {
		window = 256
	}
	type pending struct {
		env *task.Envelope
		fut jetstream.PubAckFuture
		err error
	}
	queue := make(chan pending, window)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pd := range queue {
			o := Outcome{Task: pd.env, Err: pd.err}
			if pd.err == nil {
				select {
				case o.Ack = <-pd.fut.Ok():
				case o.Err = <-pd.fut.Err():
					o.Err = fmt.Errorf("publish task %s: %w", pd.env.ID, o.Err)
				case <-ctx.Done():
					o.Err = fmt.Errorf("publish task %s: no acknowledgement: %w", pd.env.ID, ctx.Err())
				}
			}
			report(o)
		}
	}()
	var err error
	for env := range tasks {
		if err = ctx.Err(); err != nil {
			break
		}
		pd := pending{env: env}
		msg, merr := p.Message(env)
		if merr != nil {
			pd.err = merr
		} else {
			pd.fut, pd.err = p.js.PublishMsgAsync(msg)
			if pd.err != nil {
				pd.err = fmt.Errorf("publish task %s: %w", env.ID, pd.err)
			}
		}
		select {
		case queue <- pd:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
	return err
}
