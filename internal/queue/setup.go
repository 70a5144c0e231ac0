package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions tune the streams Setup creates. Zero values mean defaults.
type StreamOptions struct {
	// Replicas of both streams (1 for a single server, 3 for a cluster). Default 1.
	Replicas int
	// DLQMaxAge is how long dead-letter records are kept. Default 14 days.
	DLQMaxAge time.Duration
	// DLQMaxBytes caps the dead-letter stream; when full it refuses new records
	// (Discard: New) and the failing tasks wait in the task stream. Default 1 GiB.
	DLQMaxBytes int64
	// MaxMsgSize caps one task message. Default 1 MiB (the NATS default max_payload).
	MaxMsgSize int32
	// Duplicates is the Nats-Msg-Id window. Default 2 minutes.
	Duplicates time.Duration
}

// ConsumerOptions tune the durable pull consumer.
type ConsumerOptions struct {
	// AckWait is how long a delivered task may go without an ack or an
	// InProgress before JetStream redelivers it. Default 30s.
	AckWait time.Duration
	// MaxAckPending caps unacknowledged tasks across all consumer processes. Default 1000.
	MaxAckPending int
	// MaxDeliver caps deliveries of one task (-1 unlimited). Default -1.
	MaxDeliver int
}

// Default stream and consumer limits.
const (
	DefaultDLQMaxAge     = 14 * 24 * time.Hour
	DefaultDLQMaxBytes   = 1 << 30
	DefaultMaxMsgSize    = 1 << 20
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 1000
)

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DLQMaxAge <= 0 {
		o.DLQMaxAge = DefaultDLQMaxAge
	}
	if o.DLQMaxBytes <= 0 {
		o.DLQMaxBytes = DefaultDLQMaxBytes
	}
	if o.MaxMsgSize <= 0 {
		o.MaxMsgSize = DefaultMaxMsgSize
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 2 * time.Minute
	}
	return o
}

// TaskStreamConfig is the task stream's configuration.
func TaskStreamConfig(n Names, o StreamOptions) jetstream.StreamConfig {
	n, o = n.WithDefaults(), o.withDefaults()
	return jetstream.StreamConfig{
		Name:        n.TaskStream,
		Description: "nodeq tasks, one subject per node type",
		Subjects:    []string{n.TaskPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxMsgSize:  o.MaxMsgSize,
		Duplicates:  o.Duplicates,
		Discard:     jetstream.DiscardOld,
	}
}

// DLQStreamConfig is the dead-letter stream's configuration.
func DLQStreamConfig(n Names, o StreamOptions) jetstream.StreamConfig {
	n, o = n.WithDefaults(), o.withDefaults()
	return jetstream.StreamConfig{
		Name:        n.DLQStream,
		Description: "nodeq dead-letter records, one subject per node type",
		Subjects:    []string{n.DLQPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.DLQMaxAge,
		MaxBytes:    o.DLQMaxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  o.Duplicates,
	}
}

// ConsumerConfig is the shared durable pull consumer's configuration.
func ConsumerConfig(n Names, o ConsumerOptions) jetstream.ConsumerConfig {
	n = n.WithDefaults()
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = -1
	}
	return jetstream.ConsumerConfig{
		Durable:       n.Consumer,
		Description:   "nodeq workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxAckPending: o.MaxAckPending,
		MaxDeliver:    o.MaxDeliver,
		FilterSubject: n.TaskPrefix + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// EnsureStreams creates or updates the task and dead-letter streams. It is
// idempotent and safe to call from many processes at once.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, o StreamOptions) error {
	for _, cfg := range []jetstream.StreamConfig{TaskStreamConfig(n, o), DLQStreamConfig(n, o)} {
		if err := retryCreate(ctx, func() error {
			_, err := js.CreateOrUpdateStream(ctx, cfg)
			return err
		}); err != nil {
			return fmt.Errorf("create stream %s (subjects %v): %w", cfg.Name, cfg.Subjects, err)
		}
	}
	return nil
}

// EnsureConsumer creates or updates the durable pull consumer and returns it.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, n Names, o ConsumerOptions) (jetstream.Consumer, error) {
	cfg := ConsumerConfig(n, o)
	n = n.WithDefaults()
	var c jetstream.Consumer
	err := retryCreate(ctx, func() error {
		// Keep an operator's or a fleet breaker's pause: a consumer process
		// starting up must not resume the whole fleet.
		if existing, err := js.Consumer(ctx, n.TaskStream, cfg.Durable); err == nil {
			if until := existing.CachedInfo().Config.PauseUntil; until != nil && until.After(time.Now()) {
				cfg.PauseUntil = until
			}
		}
		var err error
		c, err = js.CreateOrUpdateConsumer(ctx, n.TaskStream, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", cfg.Durable, n.TaskStream, err)
	}
	return c, nil
}

// retryCreate retries f while the error is one a concurrent creator or a
// cluster still electing its leader causes, for up to 10 attempts.
func retryCreate(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = f(); err == nil {
			return nil
		}
		if !transientSetupError(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
	return err
}

func transientSetupError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNameInUse, jetstream.JSErrCodeConsumerExists:
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}
