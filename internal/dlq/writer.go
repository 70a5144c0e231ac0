package dlq

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names set on dead-letter record messages, for filtering without decoding.
const (
	HeaderNodeType  = "Nodeq-Node-Type"
	HeaderErrorKind = "Nodeq-Error-Kind"
	HeaderTaskID    = "Nodeq-Task-Id"
	HeaderReason    = "Nodeq-Reason"
	// HeaderReplays, on a task message, counts how often it was replayed
	// from the dead-letter stream.
	HeaderReplays = "Nodeq-Replays"
	// HeaderReplayedFrom, on a replayed task, names the record it came from: "<stream>:<seq>".
	HeaderReplayedFrom = "Nodeq-Replayed-From"
)

// Writer publishes dead-letter records to <prefix>.<node_type>.
type Writer struct {
	js     jetstream.JetStream
	prefix string
}

// NewWriter returns a Writer publishing under subject prefix (e.g. "dlq").
func NewWriter(js jetstream.JetStream, prefix string) *Writer {
	return &Writer{js: js, prefix: prefix}
}

// Write publishes r and returns once JetStream has stored it. Its
// Nats-Msg-Id is derived from the original stream and sequence, so writing
// the same failure twice within the duplicate window stores one record.
// An error means the record is not stored and the original must be kept.
func (w *Writer) Write(ctx context.Context, r *Record) (*jetstream.PubAck, error) {
	data, err := Encode(r)
	if err != nil {
		return nil, fmt.Errorf("encode dead-letter record: %w", err)
	}
	msg := nats.NewMsg(w.prefix + "." + r.NodeType)
	msg.Data = data
	msg.Header.Set("Content-Type", ContentType)
	msg.Header.Set(HeaderNodeType, r.NodeType)
	msg.Header.Set(HeaderErrorKind, r.ErrorKind)
	msg.Header.Set(HeaderReason, r.Reason)
	if r.TaskID != "" {
		msg.Header.Set(HeaderTaskID, r.TaskID)
	}
	msg.Header.Set(jetstream.MsgIDHeader, "dlq:"+r.Stream+":"+strconv.FormatUint(r.Sequence, 10))
	ack, err := w.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish dead-letter record to %s: %w", msg.Subject, err)
	}
	return ack, nil
}
