package dlq

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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
// The failure context is first cut to the documented bounds (MaxErrorLen,
// MaxCauses, MaxStackLen); the task's headers and body are stored whole.
// An error means the record is not stored and the original must be kept.
func (w *Writer) Write(ctx context.Context, r *Record) (*jetstream.PubAck, error) {
	msg, err := recordMsg(w.prefix, r)
	if err != nil {
		return nil, err
	}
	if nc := w.js.Conn(); nc != nil {
		if size, limit := msgSize(msg), nc.MaxPayload(); int64(size) > limit {
			// Cannot happen while tasks are within MaxTaskSize, which the
			// consumer checks at start; say clearly what happened if it does.
			return nil, fmt.Errorf("dead-letter record of %d bytes exceeds the server's max_payload of %d bytes: the task (%d bytes) is larger than %d bytes (dlq.MaxTaskSize)",
				size, limit, len(r.Data)+headerSize(r.Headers), MaxTaskSize(limit))
		}
	}
	ack, err := w.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish dead-letter record to %s: %w", msg.Subject, err)
	}
	if ack.Duplicate && !w.stores(ctx, ack, r) {
		// A record with this ID is stored, but it is not this task's (or
		// cannot be read to tell): the ID is predictable, so anyone who may
		// publish on the dead-letter subjects can plant one first. Store
		// this record under an ID of its own rather than let the task go
		// without one; at worst a task has two records, never none.
		msg.Header.Set(jetstream.MsgIDHeader, msg.Header.Get(jetstream.MsgIDHeader)+":"+nuid.Next())
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if ack, err = w.js.PublishMsg(pctx, msg); err != nil {
			return nil, fmt.Errorf("publish dead-letter record to %s: %w", msg.Subject, err)
		}
	}
	return ack, nil
}

// stores reports whether the message a duplicate PubAck points at is a
// record of the same delivery of the same task: same original stream,
// sequence, subject, node type and bytes. A record that cannot be read
// within a few seconds (no permission to read the stream, say) counts as
// not.
func (w *Writer) stores(ctx context.Context, ack *jetstream.PubAck, r *Record) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := w.js.Stream(ctx, ack.Stream)
	if err != nil {
		return false
	}
	m, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return false
	}
	got, err := Decode(m.Data)
	return err == nil && got.Stream == r.Stream && got.Sequence == r.Sequence && got.Subject == r.Subject &&
		got.NodeType == r.NodeType && bytes.Equal(got.Data, r.Data)
}

// recordMsg bounds r and returns the message that stores it.
func recordMsg(prefix string, r *Record) (*nats.Msg, error) {
	r.bound()
	data, err := Encode(r)
	if err != nil {
		return nil, fmt.Errorf("encode dead-letter record: %w", err)
	}
	msg := nats.NewMsg(prefix + "." + r.NodeType)
	msg.Data = data
	msg.Header.Set("Content-Type", ContentType)
	msg.Header.Set(HeaderNodeType, r.NodeType)
	msg.Header.Set(HeaderErrorKind, r.ErrorKind)
	msg.Header.Set(HeaderReason, r.Reason)
	if r.TaskID != "" {
		msg.Header.Set(HeaderTaskID, r.TaskID)
	}
	msg.Header.Set(jetstream.MsgIDHeader, "dlq:"+r.Stream+":"+strconv.FormatUint(r.Sequence, 10))
	return msg, nil
}

// msgSize is what a message counts against max_payload: headers and body.
func msgSize(m *nats.Msg) int { return len(m.Data) + headerSize(m.Header) }

// headerSize is the size of h in the NATS wire format: "NATS/1.0\r\n",
// a "Key: value\r\n" line per value, and a closing "\r\n".
func headerSize[H ~map[string][]string](h H) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + len(": \r\n")
		}
	}
	return n
}
