package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/nodeq/nodeq/internal/task"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// TaskPrefix is the task subject prefix nodeq's task stream captures.
	// A task is only ever republished on <TaskPrefix>.<node_type>. Default "tasks".
	TaskPrefix string
	// To, if set, is the node type (or its task subject, <TaskPrefix>.<node_type>)
	// every task is republished to instead of its own.
	To string
	// DryRun selects and reports without publishing or deleting anything.
	DryRun bool
	// Limit stops after this many records are replayed (0: no limit).
	Limit int
	// Rate caps replays per second (0: as fast as JetStream acknowledges).
	Rate float64
	// MaxReplays skips tasks already replayed this many times (0: no cap)...
	MaxReplays int
	// ...unless Force is set.
	Force bool
	// Progress, if set, is called after each record with the running totals.
	Progress func(ReplaySummary)
	// Concurrency is how many records are republished at once. Default 32.
	Concurrency int
}

// ReplaySummary counts a replay.
type ReplaySummary struct {
	// Selected is how many records the filter selected (within Limit).
	Selected int
	// Replayed were republished and their records deleted.
	Replayed int
	// Duplicates were republished earlier (an interrupted replay) and are
	// now only deleted: JetStream recognised the replay ID.
	Duplicates int
	// Skipped were left in place: over MaxReplays, or undecodable.
	Skipped int
	// Refused were left in place because they name no task subject nodeq
	// owns (a forged or foreign record); see Errors for why.
	Refused int
	// Failed could not be republished or deleted; their records stay.
	Failed int
	// Errors describe the first failures (at most 20).
	Errors []string
}

// ReplayMsgID is the Nats-Msg-Id of the replay of record seq of stream: the
// same for every attempt to replay that record, so that JetStream drops a
// second republish within its duplicate window, and different from the
// task's original ID, which the window would otherwise drop.
func ReplayMsgID(stream string, seq uint64) string {
	return "replay:" + stream + ":" + strconv.FormatUint(seq, 10)
}

// ErrRefused marks a record whose task replay will not republish: its
// stored subject, node type and original subject do not agree on a task
// subject that nodeq owns.
var ErrRefused = errors.New("refused")

// errSkipped marks a record left in place by the replay cap or because it
// could not be read.
var errSkipped = errors.New("skipped")

// Target returns the subject the task of e would be republished on, or an
// error wrapping ErrRefused or saying why it is skipped. The subject is
// derived, never taken from the record: <TaskPrefix>.<node_type>, where the
// node type is that of the dead-letter subject the record is stored on (a
// valid node type token), and the record's own node type and original
// subject must name the same one. With To set, To names the node type.
// A record that fails these checks may have been forged by anyone able to
// publish on the dead-letter subjects.
func (s *Store) Target(e Entry, o ReplayOptions) (string, error) {
	prefix := cmp.Or(o.TaskPrefix, "tasks")
	if e.Record == nil {
		return "", fmt.Errorf("%w: unreadable record: %v", errSkipped, e.Err)
	}
	if o.MaxReplays > 0 && !o.Force && e.Record.ReplayCount() >= o.MaxReplays {
		return "", fmt.Errorf("%w: replayed %d times already (--max-replays)", errSkipped, e.Record.ReplayCount())
	}
	if o.To != "" {
		return ReplayTo(prefix, o.To)
	}
	nodeType, ok := strings.CutPrefix(e.Subject, s.prefix+".")
	want := prefix + "." + nodeType
	switch {
	case !ok || !task.ValidNodeType(nodeType):
		return "", fmt.Errorf("%w: record %d is stored on %q, which names no node type", ErrRefused, e.Seq, e.Subject)
	case e.Record.NodeType != nodeType:
		return "", fmt.Errorf("%w: record %d is stored on %s but names node type %q", ErrRefused, e.Seq, e.Subject, e.Record.NodeType)
	case e.Record.Subject != want:
		return "", fmt.Errorf("%w: record %d names the original subject %q, not %s, the task subject of node type %s (a record of another task prefix needs --task-prefix; to send it elsewhere use --to NODE_TYPE)",
			ErrRefused, e.Seq, e.Record.Subject, want, nodeType)
	}
	return want, nil
}

// ReplayTo checks an operator's replay destination: a node type, or the
// task subject <prefix>.<node_type>; it returns the task subject.
func ReplayTo(prefix, to string) (string, error) {
	nodeType := strings.TrimPrefix(to, cmp.Or(prefix, "tasks")+".")
	if !task.ValidNodeType(nodeType) {
		return "", fmt.Errorf("--to %q: want a node type or %s.<node_type>; replay only publishes task subjects", to, cmp.Or(prefix, "tasks"))
	}
	return cmp.Or(prefix, "tasks") + "." + nodeType, nil
}

// Replay republishes the original tasks of the selected records, as they
// stood when it started: records stored later are not included. Records are
// taken oldest first and replayed Concurrency at a time. A record is deleted
// only after JetStream acknowledged its task. The task goes to the subject
// Target derives, never to one named inside the record; it carries its
// original headers except JetStream's Nats-* directives and masked
// credentials, a Nodeq-Replays count one higher, and Nodeq-Replayed-From.
func (s *Store) Replay(ctx context.Context, f *Filter, o ReplayOptions) (ReplaySummary, error) {
	var sum ReplaySummary
	if o.To != "" {
		if _, err := ReplayTo(o.TaskPrefix, o.To); err != nil {
			return sum, err
		}
	}
	last, _, err := s.Snapshot(ctx)
	if err != nil {
		return sum, err
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	var limiter *rate.Limiter
	if o.Rate > 0 {
		// A burst of 50ms worth keeps the average at Rate despite per-record latency.
		limiter = rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/20)))
	}
	var mu sync.Mutex
	update := func(change func()) {
		mu.Lock()
		defer mu.Unlock()
		change()
		if o.Progress != nil {
			o.Progress(sum)
		}
	}
	note := func(msg string) {
		if len(sum.Errors) < 20 {
			sum.Errors = append(sum.Errors, msg)
		}
	}
	fail := func(format string, args ...any) {
		update(func() {
			sum.Failed++
			note(fmt.Sprintf(format, args...))
		})
	}

	type job struct {
		e       Entry
		subject string // from Target
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if limiter != nil && limiter.Wait(ctx) != nil {
					continue // cancelled: drain without replaying
				}
				if ctx.Err() != nil {
					continue
				}
				s.replayOne(ctx, j.e, j.subject, fail, func(duplicate bool) {
					update(func() {
						if duplicate {
							sum.Duplicates++
						} else {
							sum.Replayed++
						}
					})
				})
			}
		}()
	}

	dispatched := 0
	errLimit := errors.New("limit reached")
	err = s.Scan(ctx, f, last, func(e Entry) error {
		if o.Limit > 0 && dispatched >= o.Limit {
			return errLimit
		}
		subject, err := s.Target(e, o)
		if err != nil || o.DryRun {
			update(func() {
				sum.Selected++
				switch {
				case errors.Is(err, ErrRefused):
					sum.Refused++
					note(err.Error())
				case err != nil:
					sum.Skipped++
				default:
					sum.Replayed++
				}
			})
			if err == nil {
				dispatched++
			}
			return nil
		}
		update(func() { sum.Selected++ })
		dispatched++
		select {
		case jobs <- job{e, subject}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(jobs)
	wg.Wait()
	if errors.Is(err, errLimit) {
		err = nil
	}
	if err == nil {
		err = ctx.Err()
	}
	return sum, err
}

// replayOne republishes one record's task on subject and then deletes the record.
func (s *Store) replayOne(ctx context.Context, e Entry, subject string, fail func(string, ...any), done func(duplicate bool)) {
	r := e.Record
	msg := nats.NewMsg(subject)
	msg.Data = r.Data
	for k, vs := range r.Headers {
		if strings.HasPrefix(strings.ToLower(k), "nats-") || len(vs) == 1 && vs[0] == Masked {
			continue // JetStream directives of the first publish; credentials not kept
		}
		msg.Header[k] = append([]string(nil), vs...)
	}
	msg.Header.Set(HeaderReplays, strconv.Itoa(r.ReplayCount()+1))
	msg.Header.Set(HeaderReplayedFrom, s.stream+":"+strconv.FormatUint(e.Seq, 10))
	msg.Header.Set(nats.MsgIdHdr, ReplayMsgID(s.stream, e.Seq))
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		if ctx.Err() == nil {
			fail("record %d (task %q): republish to %s: %v", e.Seq, r.TaskID, msg.Subject, err)
		}
		return
	}
	if err := s.Delete(ctx, e.Seq); err != nil {
		if ctx.Err() == nil {
			fail("record %d (task %q): republished but not deleted (a rerun deletes it without republishing within the duplicate window): %v", e.Seq, r.TaskID, err)
		}
		return
	}
	done(ack.Duplicate)
}

// Purge deletes the selected records and returns how many. With an empty
// filter it purges the whole stream at once.
func (s *Store) Purge(ctx context.Context, f *Filter) (int, error) {
	last, n, err := s.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	if f.IsZero() {
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			return 0, err
		}
		// Only what was there when the purge began: records stored since stay.
		return int(n), st.Purge(ctx, jetstream.WithPurgeSequence(last+1))
	}
	var seqs []uint64
	if err := s.Scan(ctx, f, last, func(e Entry) error { seqs = append(seqs, e.Seq); return nil }); err != nil {
		return 0, err
	}
	for i, seq := range seqs {
		if err := s.Delete(ctx, seq); err != nil {
			return i, fmt.Errorf("delete record %d: %w", seq, err)
		}
	}
	return len(seqs), nil
}
