package nodeq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/worker"
)

// ErrDuplicate is returned by Call for a task whose ID JetStream already
// stored within the stream's duplicate window (2 minutes by default): the
// copy was dropped, and the result goes to the first publisher.
var ErrDuplicate = errors.New("a task with this ID was already published")

// Client publishes tasks and waits for their results. It is safe for
// concurrent use. Close it when done.
type Client struct {
	nc        *nats.Conn
	publisher *queue.Publisher
	names     queue.Names
	// noReply says why Call cannot wait for results: the consumers'
	// consumer.reply_subjects refuse every inbox this client could use.
	noReply error
}

// NewClient connects to the NATS server cfg names, with its credentials and
// TLS, and publishes under its stream names: give it the consumer's
// configuration. With an empty NATS.URL it connects to the embedded server
// a Consumer of cfg starts, at Embedded.Listen. The streams must exist
// before the first Publish: start a consumer (or cmd/consumer) first.
func NewClient(cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	names := cfg.QueueNames()
	if err := names.Validate(); err != nil {
		return nil, fmt.Errorf("nodeq: names: %w", err)
	}
	url, auth := cfg.NATS.URL, cfg.Auth()
	if url == "" {
		_, port, err := net.SplitHostPort(cfg.Embedded.Listen)
		if err != nil || port == "0" {
			return nil, fmt.Errorf("nodeq: NewClient: NATS.URL is empty and embedded.listen %q names no fixed address: set NATS.URL, e.g. to Server.URL()", cfg.Embedded.Listen)
		}
		url = "nats://" + cfg.Embedded.Listen
		auth.CAFile, auth.CertFile, auth.KeyFile, auth.ServerName = "", "", "", "" // the embedded server serves no TLS
	}
	return dialClient(url, auth, names, cfg.Consumer.ReplySubjects)
}

// dialClient connects a client to url with auth's credentials, with an
// inbox prefix that the consumers' reply allow-list accepts.
func dialClient(url string, auth natsconn.Auth, names queue.Names, replyAllow []string) (*Client, error) {
	authOpts, err := auth.Options()
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	prefix, noReply, err := callInbox(names, replyAllow)
	if err != nil {
		return nil, fmt.Errorf("nodeq: consumer.reply_subjects: %w", err)
	}
	if prefix != "" {
		authOpts = append(authOpts, nats.CustomInboxPrefix(prefix))
	}
	nc, err := natsconn.Connect(url, "nodeq-client "+worker.DefaultID(), slog.Default(), authOpts...)
	if err != nil {
		return nil, fmt.Errorf("nodeq: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nodeq: jetstream: %w", err)
	}
	return &Client{nc: nc, publisher: queue.NewPublisher(js, names), names: names, noReply: noReply}, nil
}

// callInbox picks the inbox prefix Call waits for results under: the
// connection's default (_INBOX, returned as "") when the consumers'
// consumer.reply_subjects allow it, else the first allowed filter of the
// form <prefix>.> without wildcards in <prefix>. With neither, consumers
// would dead-letter every task Call publishes as invalid without running
// it, so noReply says why Call refuses.
func callInbox(names queue.Names, allow []string) (prefix string, noReply, err error) {
	policy, err := queue.NewReplySubjects(names, allow)
	if err != nil {
		return "", nil, err
	}
	if policy.Check(nats.NewInbox()) == nil {
		return "", nil, nil
	}
	for _, f := range allow {
		p, ok := strings.CutSuffix(f, ".>")
		if ok && !strings.ContainsAny(p, "*>") && policy.Check(p+".x") == nil {
			return p, nil, nil
		}
	}
	return "", fmt.Errorf("consumer.reply_subjects (%s) allow no inbox this client can wait on: consumers would dead-letter the task as invalid; allow _INBOX.> or a <prefix>.> filter", strings.Join(allow, ", ")), nil
}

// Close closes the connection. Calls in progress fail.
func (c *Client) Close() { c.nc.Close() }

// PublishOption sets an optional field of a published task; see WithTaskID,
// WithNodeID, WithCorrelationID, WithParams and WithDeadline.
type PublishOption func(*publishOptions)

// publishOptions are the optional fields of a task's envelope.
type publishOptions struct {
	id, nodeID, correlationID string
	params                    map[string]any
	deadline                  time.Time
}

// WithTaskID sets the task's ID (default: a new unique ID). A task
// published again with the same ID within the stream's duplicate window
// (2 minutes by default) is stored once. At most 256 bytes of UTF-8
// without control characters.
func WithTaskID(id string) PublishOption { return func(o *publishOptions) { o.id = id } }

// WithNodeID sets the node's ID in the caller's pipeline graph (Task.NodeID).
func WithNodeID(id string) PublishOption { return func(o *publishOptions) { o.nodeID = id } }

// WithCorrelationID sets the ID tying the tasks of one pipeline run together.
func WithCorrelationID(id string) PublishOption {
	return func(o *publishOptions) { o.correlationID = id }
}

// WithParams sets the task's node parameters (Task.Params), e.g.
// {"duration": "2s"} for the built-in sleep node type.
func WithParams(params map[string]any) PublishOption {
	return func(o *publishOptions) { o.params = params }
}

// WithDeadline sets when the task stops being worth running: a consumer
// does not start it after t (it is dead-lettered with reason deadline),
// and a running handler's ctx ends then.
func WithDeadline(t time.Time) PublishOption {
	return func(o *publishOptions) { o.deadline = t }
}

// Publish publishes a task of nodeType with payload (handed to the handler
// as Task.Payload, byte for byte) and returns its ID once JetStream has
// stored it. It does not wait for the task to run; Call does. When ctx
// carries an OpenTelemetry span, the task carries its W3C trace context
// (traceparent): a tracing consumer's spans of the task join that trace.
func (c *Client) Publish(ctx context.Context, nodeType string, payload []byte, opts ...PublishOption) (string, error) {
	env, err := newEnvelope(nodeType, payload, opts)
	if err != nil {
		return "", err
	}
	if _, err := c.publish(ctx, env); err != nil {
		return "", err
	}
	return env.ID, nil
}

// Call publishes a task like Publish, then waits for its result until ctx
// is done: bound it with a deadline. The result comes once the task has
// succeeded or been dead-lettered; while it is retried or waits for a
// redelivery Call keeps waiting. When the task succeeded, err is nil; when
// it failed, res describes the failure and err is a *TaskError. When ctx
// ends first, the task stays queued (or running) and err says so. The task
// carries ctx's trace context as with Publish.
func (c *Client) Call(ctx context.Context, nodeType string, payload []byte, opts ...PublishOption) (*Result, error) {
	if c.noReply != nil {
		return nil, fmt.Errorf("nodeq: Call %s: %w", nodeType, c.noReply)
	}
	env, err := newEnvelope(nodeType, payload, opts)
	if err != nil {
		return nil, err
	}
	env.ReplyTo = c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(env.ReplyTo)
	if err != nil {
		return nil, fmt.Errorf("nodeq: subscribe to the reply subject: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	ack, err := c.publish(ctx, env)
	if err != nil {
		return nil, err
	}
	if ack.Duplicate {
		return nil, fmt.Errorf("nodeq: task %s: %w within the stream's duplicate window; its result goes to the first publisher", env.ID, ErrDuplicate)
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				err = ctxErr
			}
			return nil, fmt.Errorf("nodeq: no result for task %s (%s): it stays queued or running: %w", env.ID, nodeType, err)
		}
		r, err := task.DecodeResult(msg.Data, msg.Header.Get(queue.HeaderContentType))
		if err != nil || r.TaskID != env.ID {
			continue // not this task's result: the inbox is only hard to guess
		}
		res := newResult(r)
		if !res.OK {
			return res, &TaskError{Result: res}
		}
		return res, nil
	}
}

// publish sends env and explains the errors a caller can act on.
func (c *Client) publish(ctx context.Context, env *task.Envelope) (*jetstream.PubAck, error) {
	ack, err := c.publisher.Publish(ctx, env)
	switch {
	case err == nil:
		return ack, nil
	case errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("nodeq: %w: no stream stores %s.>: start a consumer first (it creates the streams), with the same names", err, c.names.TaskPrefix)
	}
	return nil, fmt.Errorf("nodeq: %w", err)
}

// newEnvelope builds a task from Publish's arguments and checks it.
func newEnvelope(nodeType string, payload []byte, opts []PublishOption) (*task.Envelope, error) {
	if err := checkNodeType(nodeType); err != nil {
		return nil, fmt.Errorf("nodeq: publish: %w", err)
	}
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	env := &task.Envelope{ID: o.id, NodeID: o.nodeID, NodeType: nodeType, CorrelationID: o.correlationID, Payload: payload, Params: o.params}
	if !o.deadline.IsZero() {
		env.Deadline = o.deadline.UTC()
	}
	if env.ID == "" {
		env.ID = queue.NewTaskID()
	}
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("nodeq: publish: %w", err)
	}
	return env, nil
}

// Result is what a consumer reports when a task reaches its outcome.
type Result struct {
	// TaskID, NodeID and NodeType repeat the task's.
	TaskID   string
	NodeID   string
	NodeType string
	// OK is true when the node succeeded; Output is then its output.
	OK     bool
	Output []byte
	// ErrorKind and Error describe a failure: the task was dead-lettered.
	// ErrorKind is "Other" for a Permanent error or a panic, "Execution"
	// for a handler's plain error whose retries and redeliveries ran out,
	// "Manifest" for a node type no consumer runs; docs/executors.md lists
	// every kind.
	ErrorKind string
	Error     string
	// Attempts is how many times the node ran in the last delivery.
	Attempts int
	// Duration is the time from the delivery's first attempt to the outcome.
	Duration time.Duration
	// Worker identifies the consumer process that ran it (host/pid).
	Worker string
}

func newResult(r *task.Result) *Result {
	return &Result{TaskID: r.TaskID, NodeID: r.NodeID, NodeType: r.NodeType, OK: r.OK, Output: r.Output,
		ErrorKind: r.ErrorKind, Error: r.Error, Attempts: r.Attempts, Duration: time.Duration(r.DurationMS) * time.Millisecond, Worker: r.Worker}
}

// TaskError is Call's error for a task that failed: it was dead-lettered
// (inspect or replay it with cmd/producer's dlq commands).
type TaskError struct {
	Result *Result
}

// Error implements error.
func (e *TaskError) Error() string {
	r := e.Result
	return fmt.Sprintf("nodeq: task %s (%s) failed (%s) after %d attempt(s) on %s: %s; it was dead-lettered",
		r.TaskID, r.NodeType, r.ErrorKind, r.Attempts, r.Worker, r.Error)
}
