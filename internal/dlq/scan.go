package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store reads and changes the dead-letter stream.
type Store struct {
	js     jetstream.JetStream
	stream string
	prefix string

	mu     sync.Mutex
	handle jetstream.Stream // looked up once, for deletes and gets
}

// NewStore returns a Store for the stream with the given name and subject prefix.
func NewStore(js jetstream.JetStream, stream, prefix string) *Store {
	return &Store{js: js, stream: stream, prefix: prefix}
}

// Entry is one stored record.
type Entry struct {
	Seq     uint64
	Time    time.Time // when the record was stored
	Subject string
	Header  nats.Header
	Record  *Record
	// Err is set when the message could not be decoded as a record; Record is nil then.
	Err error
}

// Snapshot returns the stream's last sequence: a scan up to it sees a fixed
// selection, whatever is added while it runs.
func (s *Store) Snapshot(ctx context.Context) (last uint64, msgs uint64, err error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, 0, fmt.Errorf("dead-letter stream %s: %w", s.stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("dead-letter stream %s: %w", s.stream, err)
	}
	return info.State.LastSeq, info.State.Msgs, nil
}

// scanIdle is how long Scan waits for the next message before it takes the
// records still pending as deleted meanwhile. The time fn takes does not
// count (a rate-limited replay blocks in it).
var scanIdle = 10 * time.Second

// Scan calls fn for every record up to sequence last (0 means the current
// last) that f selects, oldest first. Undecodable messages are passed with
// Err set when f has no record-level conditions. fn returning an error stops
// the scan with that error.
func (s *Store) Scan(ctx context.Context, f *Filter, last uint64, fn func(Entry) error) error {
	if last == 0 {
		var err error
		if last, _, err = s.Snapshot(ctx); err != nil {
			return err
		}
	}
	if last == 0 || (f.AfterSeq > 0 && f.AfterSeq >= last) {
		return nil
	}
	if len(f.Seqs) > 0 {
		return s.scanSeqs(ctx, f, last, fn)
	}
	// A scan's consumer is deleted when it ends; should this process die
	// first, the server deletes it after a minute without pulls.
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute}
	for _, t := range f.NodeTypes {
		cfg.FilterSubjects = append(cfg.FilterSubjects, s.prefix+"."+t)
	}
	switch {
	case f.AfterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.AfterSeq+1
	case !f.Since.IsZero():
		since := f.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.js.OrderedConsumer(ctx, s.stream, cfg)
	if err != nil {
		return fmt.Errorf("read dead-letter stream %s: %w", s.stream, err)
	}
	defer s.deleteConsumer(cons)
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("read dead-letter stream %s: %w", s.stream, err)
	}
	defer it.Stop()
	// Messages() takes no context: stop the iterator when ctx ends, or when
	// nothing arrives for a while (the records still pending were deleted
	// meanwhile). Either makes Next return ErrMsgIteratorClosed.
	defer context.AfterFunc(ctx, it.Stop)()
	idle := scanIdle
	idleTimer := time.AfterFunc(idle, it.Stop)
	defer idleTimer.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("read dead-letter stream %s: %w", s.stream, err)
		}
		idleTimer.Stop() // fn's time is not idleness: a slow replay must not end the scan
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		seq := meta.Sequence.Stream
		if seq > last || (f.BeforeSeq > 0 && seq >= f.BeforeSeq) || (!f.Until.IsZero() && !meta.Timestamp.Before(f.Until)) {
			return nil
		}
		e := Entry{Seq: seq, Time: meta.Timestamp, Subject: msg.Subject(), Header: msg.Headers()}
		e.Record, e.Err = Decode(msg.Data())
		if f.Selects(e) {
			if err := fn(e); err != nil {
				return err
			}
		}
		if seq >= last || meta.NumPending == 0 {
			return nil
		}
		idleTimer.Reset(idle)
	}
}

// deleteConsumer deletes the ordered consumer a scan read with, so that
// no command leaves one behind on the server.
func (s *Store) deleteConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.js.DeleteConsumer(ctx, s.stream, info.Name) // at worst it expires (InactiveThreshold)
}

// scanSeqs is Scan of the records at f.Seqs: each is read on its own,
// in order; a sequence with no message is passed over.
func (s *Store) scanSeqs(ctx context.Context, f *Filter, last uint64, fn func(Entry) error) error {
	seqs := slices.Clone(f.Seqs)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	rest := *f
	rest.Seqs = nil // applied here, not record by record
	for _, seq := range seqs {
		if seq > last {
			return nil
		}
		e, err := s.Get(ctx, seq)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return err
		}
		if len(f.NodeTypes) > 0 && !slices.Contains(f.NodeTypes, strings.TrimPrefix(e.Subject, s.prefix+".")) {
			continue
		}
		if !f.Since.IsZero() && e.Time.Before(f.Since) || !f.Until.IsZero() && !e.Time.Before(f.Until) {
			continue
		}
		if rest.Selects(*e) {
			if err := fn(*e); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrNotFound is returned by Get for a sequence with no record: replayed,
// purged, expired, or never stored.
var ErrNotFound = errors.New("no such record")

// streamHandle returns the stream, looking it up on first use.
func (s *Store) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handle == nil {
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			return nil, fmt.Errorf("dead-letter stream %s: %w", s.stream, err)
		}
		s.handle = st
	}
	return s.handle, nil
}

// Get returns the record at seq.
func (s *Store) Get(ctx context.Context, seq uint64) (*Entry, error) {
	st, err := s.streamHandle(ctx)
	if err != nil {
		return nil, err
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("record %d: %w in %s (replayed, purged or expired, or never stored: see dlq list)", seq, ErrNotFound, s.stream)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	e := &Entry{Seq: m.Sequence, Time: m.Time, Subject: m.Subject, Header: m.Header}
	e.Record, e.Err = Decode(m.Data)
	return e, nil
}

// Delete removes the record at seq.
func (s *Store) Delete(ctx context.Context, seq uint64) error {
	st, err := s.streamHandle(ctx)
	if err != nil {
		return err
	}
	return st.DeleteMsg(ctx, seq)
}
