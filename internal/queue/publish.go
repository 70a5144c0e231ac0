package queue

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// Header names nodeq sets on task messages.
const (
	HeaderContentType = "Content-Type"
	HeaderMsgID       = jetstream.MsgIDHeader
)

var contentTypeMsgpack = []string{task.ContentTypeMsgpack}

// DefaultAckTimeout is how long PublishAll waits for each task's PubAck
// unless WithAckTimeout says otherwise.
const DefaultAckTimeout = 30 * time.Second

// Publisher publishes tasks onto their subjects in the task stream.
type Publisher struct {
	js         jetstream.JetStream
	names      Names
	ackTimeout time.Duration
}

// NewPublisher returns a publisher for the given stream names.
func NewPublisher(js jetstream.JetStream, names Names) *Publisher {
	return &Publisher{js: js, names: names, ackTimeout: DefaultAckTimeout}
}

// WithAckTimeout returns a copy of p whose PublishAll waits at most d for
// each task's PubAck, counted from when the task was sent. A JetStream
// handle made with jetstream.WithPublishAsyncTimeout(d) also forgets the
// unanswered publishes then, rather than holding them until it closes.
func (p *Publisher) WithAckTimeout(d time.Duration) *Publisher {
	q := *p
	if d > 0 {
		q.ackTimeout = d
	}
	return &q
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
// When ctx carries a span (OpenTelemetry), the task carries its W3C trace
// context (traceparent, tracestate): the consumer's spans of the task
// join that trace.
func (p *Publisher) Publish(ctx context.Context, env *task.Envelope) (*jetstream.PubAck, error) {
	msg, err := p.Message(env)
	if err != nil {
		return nil, err
	}
	tracing.Inject(ctx, msg.Header)
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish task %s to %s: %w", env.ID, msg.Subject, err)
	}
	return ack, nil
}

// Outcome is the result of publishing one task of a batch.
type Outcome struct {
	Task *task.Envelope
	// Ack is JetStream's acknowledgement: the task is stored.
	Ack *jetstream.PubAck
	// Err says why there is no Ack.
	Err error
	// Unconfirmed is set with Err when the task was sent but JetStream
	// neither confirmed nor refused it: no PubAck within the ack timeout
	// (Err wraps jetstream.ErrAsyncPublishTimeout), the connection lost,
	// or ctx done. Such a task may or may not be stored; publishing it
	// again with the same ID within the stream's duplicate window is safe.
	// Without it, Err means the task is not stored.
	Unconfirmed bool
}

// PublishAll publishes tasks asynchronously with at most window of them
// awaiting their acknowledgement, and calls report once per task, in order,
// after its PubAck, its failure, or the ack timeout (DefaultAckTimeout, or
// WithAckTimeout's) counted from when it was sent. It returns when every
// task taken from tasks is reported, or when ctx is done: tasks awaiting
// their PubAck are then reported Unconfirmed, the one in hand as not sent,
// and no more are taken. When ctx carries a span, every task carries its
// trace context, as with Publish.
func (p *Publisher) PublishAll(ctx context.Context, tasks iter.Seq[*task.Envelope], window int, report func(Outcome)) error {
	if window <= 0 {
		window = 256
	}
	timeout := p.ackTimeout
	if timeout <= 0 {
		timeout = DefaultAckTimeout
	}
	type pending struct {
		env      *task.Envelope
		fut      jetstream.PubAckFuture
		deadline time.Time
		err      error
	}
	queue := make(chan pending, window)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pd := range queue {
			o := Outcome{Task: pd.env, Err: pd.err}
			if pd.err == nil {
				o = awaitPubAck(ctx, pd.env, pd.fut, pd.deadline, timeout)
			}
			report(o)
		}
	}()
	// last reports, after every queued task, the one in hand when ctx ended.
	last := func(o Outcome) error {
		close(queue)
		<-done
		report(o)
		return ctx.Err()
	}
	for env := range tasks {
		if err := ctx.Err(); err != nil {
			return last(Outcome{Task: env, Err: fmt.Errorf("task not sent: %w", err)})
		}
		pd := pending{env: env}
		msg, merr := p.Message(env)
		if merr != nil {
			pd.err = merr
		} else {
			tracing.Inject(ctx, msg.Header)
			pd.deadline = time.Now().Add(timeout)
			pd.fut, pd.err = p.js.PublishMsgAsync(msg)
			if pd.err != nil {
				pd.err = fmt.Errorf("publish task %s: %w", env.ID, pd.err)
			}
		}
		select {
		case queue <- pd:
		case <-ctx.Done():
			o := Outcome{Task: env, Err: pd.err}
			if pd.err == nil {
				o.Err, o.Unconfirmed = fmt.Errorf("publish task %s: no PubAck: %w", env.ID, ctx.Err()), true
			}
			return last(o)
		}
	}
	close(queue)
	<-done
	return nil
}

// awaitPubAck waits for the answer to a sent task until deadline. An
// answer that has arrived wins over a deadline that has passed meanwhile.
func awaitPubAck(ctx context.Context, env *task.Envelope, fut jetstream.PubAckFuture, deadline time.Time, timeout time.Duration) Outcome {
	ok, failed := fut.Ok(), fut.Err()
	select {
	case ack := <-ok:
		return Outcome{Task: env, Ack: ack}
	case err := <-failed:
		return pubAckFailed(env, err, timeout)
	default:
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case ack := <-ok:
		return Outcome{Task: env, Ack: ack}
	case err := <-failed:
		return pubAckFailed(env, err, timeout)
	case <-timer.C:
		return pubAckFailed(env, jetstream.ErrAsyncPublishTimeout, timeout)
	case <-ctx.Done():
		return Outcome{Task: env, Err: fmt.Errorf("publish task %s: no PubAck: %w", env.ID, ctx.Err()), Unconfirmed: true}
	}
}

// pubAckFailed is the outcome of a sent task whose PubAck future failed.
// Only JetStream's refusal (an API error, or no stream listening) means the
// task is not stored; anything else leaves it unconfirmed.
func pubAckFailed(env *task.Envelope, err error, timeout time.Duration) Outcome {
	if errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		return Outcome{Task: env, Err: fmt.Errorf("publish task %s: no PubAck within %v: %w", env.ID, timeout, err), Unconfirmed: true}
	}
	var apiErr *jetstream.APIError
	refused := errors.As(err, &apiErr) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
	return Outcome{Task: env, Err: fmt.Errorf("publish task %s: %w", env.ID, err), Unconfirmed: !refused}
}
