package consumer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
)

// taskSizeLimit returns the largest task message the task stream may
// accept: every task it accepts must be able to become a dead-letter
// record, which adds its failure context, in one message of the server's
// max_payload. streams.max_msg_size 0 means that largest size; a larger
// configured value is refused with what to do instead.
func taskSizeLimit(cfg *config.Config, maxPayload int64) (int64, error) {
	limit := dlq.MaxTaskSize(maxPayload)
	want := int64(cfg.Streams.MaxMsgSize)
	switch {
	case limit <= 0:
		return 0, fmt.Errorf("the server's max_payload of %d bytes leaves no room for a task and its dead-letter record; raise max_payload", maxPayload)
	case want == 0:
		return limit, nil
	case want > limit:
		return 0, fmt.Errorf("streams.max_msg_size %v is too large for the server's max_payload of %v: a failing task of that size could never be dead-lettered, "+
			"since its record adds up to %v; set streams.max_msg_size to at most %v (or 0 for that), or raise the server's max_payload",
			config.ByteSize(want), config.ByteSize(maxPayload), config.ByteSize(maxPayload-limit), config.ByteSize(limit))
	}
	return want, nil
}

// checkTaskStream verifies that the task stream, as it is on the server,
// accepts no task larger than limit. Set-up normally makes it so; a stream
// that an operator created, and that this consumer may not update, may not.
func checkTaskStream(ctx context.Context, js jetstream.JetStream, names queue.Names, limit int64, log *slog.Logger) error {
	var st jetstream.Stream
	err := queue.RetrySetup(ctx, log, "task stream "+names.TaskStream, func(ctx context.Context) error {
		var err error
		st, err = js.Stream(ctx, names.TaskStream)
		return err
	})
	if err != nil {
		return fmt.Errorf("task stream %s: %w", names.TaskStream, err)
	}
	got := int64(st.CachedInfo().Config.MaxMsgSize)
	if got <= 0 || got > limit {
		size := "no limit of its own (the server's max_payload)"
		if got > 0 {
			size = fmt.Sprintf("up to %v", config.ByteSize(got))
		}
		return fmt.Errorf("task stream %s accepts messages of %s, but only tasks up to %v can be dead-lettered whole: set its max_msg_size to at most %d bytes (nats stream edit %s --max-msg-size %d)",
			names.TaskStream, size, config.ByteSize(limit), limit, names.TaskStream, limit)
	}
	return nil
}
