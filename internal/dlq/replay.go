package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/nodeq/nodeq/internal/task"
)

// ReplayOptions configure Replay. The zero value replays every selected
// record to its own node type's subject under "tasks", as fast as JetStream
// acknowledges, without a replay cap.
type ReplayOptions struct {
	// TaskPrefix is the task subject prefix nodeq's task stream captures.
	// A task is only ever republished on <TaskPrefix>.<node_type>. Default "tasks".
	TaskPrefix string
	// To, if set, is the node type (or its task subject, <TaskPrefix>.<node_type>)
	// every task is republished to instead of the subject the record names.
	// A record of another node type is refused: its envelope names its own
	// node type, which a consumer checks against the subject. To serves
	// records whose original subject is not the task subject of their
	// node type (another task prefix).
	To string
	// DryRun selects and decides exactly as a replay does, by the same
	// rules, and reports it (the summary, OnRecord) without publishing or
	// deleting anything.
	DryRun bool
	// Limit stops after this many records are replayed (0: no limit).
	Limit int
	// Rate caps replays per second (0: as fast as JetStream acknowledges).
	Rate float64
	// MaxReplays skips tasks already replayed this many times (0: no cap)...
	MaxReplays int
	// ...unless Force is set.
	Force bool
	// Progress, if set, is called with the running totals each time a
	// record is selected and each time one is settled.
	Progress func(ReplaySummary)
	// OnRecord, if set, is called once for each selected record with what
	// became of it (with DryRun: what would) and, for OutcomeSkipped,
	// OutcomeRefused and OutcomeFailed, why. Calls come one at a time;
	// those of a dry run come oldest first.
	OnRecord func(Entry, Outcome, error)
	// Concurrency is how many records are republished at once. Default 32.
	Concurrency int
}

// Validate checks the options: To must name a node type, and the numbers
// must not be negative.
func (o ReplayOptions) Validate() error {
	switch {
	case o.Limit < 0:
		return fmt.Errorf("replay limit %d is negative", o.Limit)
	case o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0):
		return fmt.Errorf("replay rate %v: want a positive number of records per second, or 0 for no limit", o.Rate)
	case o.MaxReplays < 0:
		return fmt.Errorf("max replays %d is negative", o.MaxReplays)
	case o.Concurrency < 0:
		return fmt.Errorf("replay concurrency %d is negative", o.Concurrency)
	}
	if o.To != "" {
		if _, err := replayTo(o.TaskPrefix, o.To); err != nil {
			return err
		}
	}
	return nil
}

// Outcome is what Replay did with one record.
type Outcome uint8

// Outcomes of a record in a replay.
const (
	// OutcomeReplayed: the task was republished and the record deleted
	// (in a dry run: would be).
	OutcomeReplayed Outcome = iota + 1
	// OutcomeDuplicate: JetStream had the task from an earlier, interrupted
	// replay, and the record was only deleted; or another replay (or a
	// purge) removed the record first, and nothing was republished. A dry
	// run cannot tell these from OutcomeReplayed and reports them so.
	OutcomeDuplicate
	// OutcomeSkipped: left in place by MaxReplays or because it is unreadable.
	OutcomeSkipped
	// OutcomeRefused: left in place because it names no task subject nodeq
	// owns (a forged or foreign record); the error wraps ErrRefused.
	OutcomeRefused
	// OutcomeFailed: the republish or the delete failed; the record stays.
	OutcomeFailed
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case OutcomeReplayed:
		return "replayed"
	case OutcomeDuplicate:
		return "duplicate"
	case OutcomeSkipped:
		return "skipped"
	case OutcomeRefused:
		return "refused"
	case OutcomeFailed:
		return "failed"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// ReplaySummary counts a replay.
type ReplaySummary struct {
	// Selected is how many records the filter selected (within Limit).
	Selected int `json:"selected"`
	// Replayed were republished and their records deleted. In a dry run,
	// they would be (a replay may count some of them as Duplicates).
	Replayed int `json:"replayed"`
	// Duplicates were republished earlier (an interrupted replay) and are
	// now only deleted: JetStream recognised the replay ID.
	Duplicates int `json:"duplicates"`
	// Skipped were left in place: over MaxReplays, or undecodable.
	Skipped int `json:"skipped"`
	// Refused were left in place because they name no task subject nodeq
	// owns (a forged or foreign record); see Errors for why.
	Refused int `json:"refused"`
	// Failed could not be republished or deleted; their records stay.
	Failed int `json:"failed"`
	// Errors describe the first failures (at most 20).
	Errors []string `json:"errors"`
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

// target returns the subject the task of e would be republished on, or an
// error wrapping ErrRefused or saying why it is skipped. The subject is
// derived, never taken from the record: <TaskPrefix>.<node_type>, where the
// node type is that of the dead-letter subject the record is stored on (a
// valid node type token), and the record's own node type and original
// subject must name the same one. With To set, To names the node type.
// A record that fails these checks may have been forged by anyone able to
// publish on the dead-letter subjects.
func (s *Store) target(e Entry, o ReplayOptions) (string, error) {
	prefix := cmp.Or(o.TaskPrefix, "tasks")
	if e.Record == nil {
		return "", fmt.Errorf("%w: unreadable record: %v", errSkipped, e.Err)
	}
	if o.MaxReplays > 0 && !o.Force && e.Record.ReplayCount() >= o.MaxReplays {
		return "", fmt.Errorf("%w: replayed %d times already (--max-replays)", errSkipped, e.Record.ReplayCount())
	}
	if o.To != "" {
		subject, err := replayTo(prefix, o.To)
		if err != nil {
			return "", err
		}
		if to := strings.TrimPrefix(subject, prefix+"."); e.Record.NodeType != to {
			// A consumer checks the envelope's node type against the subject.
			return "", fmt.Errorf("%w: record %d holds a task of node type %s, and its envelope says so: on %s a consumer would dead-letter it again at once as invalid (--to only moves a task between task prefixes, to its own node type)",
				ErrRefused, e.Seq, quoteField(e.Record.NodeType), subject)
		}
		return subject, nil
	}
	nodeType, ok := strings.CutPrefix(e.Subject, s.prefix+".")
	want := prefix + "." + nodeType
	switch {
	case !ok || !task.ValidNodeType(nodeType):
		return "", fmt.Errorf("%w: record %d is stored on %s, which names no node type", ErrRefused, e.Seq, quoteField(e.Subject))
	case e.Record.NodeType != nodeType:
		return "", fmt.Errorf("%w: record %d is stored on %s but names node type %s", ErrRefused, e.Seq, e.Subject, quoteField(e.Record.NodeType))
	case e.Record.Subject != want:
		return "", fmt.Errorf("%w: record %d names the original subject %s, not %s, the task subject of node type %s (a record of another task prefix needs that --task-prefix, or --to %s to move it to this prefix)",
			ErrRefused, e.Seq, quoteField(e.Record.Subject), want, nodeType, nodeType)
	}
	return want, nil
}

// quoteField quotes a field of a record for an explanation, cut to
// maxShortField bytes first: a record written by hand may hold megabytes
// in it, and the explanations are kept (ReplaySummary.Errors, a preview).
func quoteField(s string) string { return strconv.Quote(truncate(s, maxShortField)) }

// replayTo checks an operator's replay destination: a node type, or the
// task subject <prefix>.<node_type>; it returns the task subject.
func replayTo(prefix, to string) (string, error) {
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
// target derives, never to one named inside the record; it carries its
// original headers except JetStream's Nats-* directives and masked
// credentials, a Nodeq-Replays count one higher, and Nodeq-Replayed-From.
func (s *Store) Replay(ctx context.Context, f *Filter, o ReplayOptions) (ReplaySummary, error) {
	var sum ReplaySummary
	if err := o.Validate(); err != nil {
		return sum, err
	}
	last, _, err := s.Snapshot(ctx)
	if err != nil {
		return sum, err
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	var limiter *rate.Limiter
	if o.Rate > 0 && !o.DryRun {
		// A burst of 50ms worth keeps the average at Rate despite per-record latency.
		limiter = rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/20)))
	}
	// settle counts one record's outcome; mu keeps the summary and the
	// callbacks to one goroutine at a time.
	var mu sync.Mutex
	settle := func(e Entry, out Outcome, why error) {
		mu.Lock()
		defer mu.Unlock()
		switch out {
		case OutcomeReplayed:
			sum.Replayed++
		case OutcomeDuplicate:
			sum.Duplicates++
		case OutcomeSkipped:
			sum.Skipped++
		case OutcomeRefused:
			sum.Refused++
		case OutcomeFailed:
			sum.Failed++
		}
		if why != nil && out != OutcomeSkipped && len(sum.Errors) < 20 {
			sum.Errors = append(sum.Errors, why.Error())
		}
		if o.OnRecord != nil {
			o.OnRecord(e, out, why)
		}
		if o.Progress != nil {
			o.Progress(sum)
		}
	}
	selected := func() {
		mu.Lock()
		defer mu.Unlock()
		sum.Selected++
		if o.Progress != nil {
			o.Progress(sum)
		}
	}

	jobs := make(chan job)
	var wg sync.WaitGroup
	workers := o.Concurrency
	if o.DryRun {
		workers = 0 // nothing is republished
	}
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if limiter != nil && limiter.Wait(ctx) != nil {
					continue // cancelled: drain without replaying
				}
				if ctx.Err() != nil {
					continue
				}
				out, err := s.replayOne(ctx, j.e, j.subject)
				if out != 0 {
					settle(j.e, out, err)
				}
			}
		})
	}

	dispatched := 0
	errLimit := errors.New("limit reached")
	err = s.Scan(ctx, f, last, func(e Entry) error {
		if o.Limit > 0 && dispatched >= o.Limit {
			return errLimit
		}
		selected()
		subject, err := s.target(e, o)
		switch {
		case errors.Is(err, ErrRefused):
			settle(e, OutcomeRefused, err)
			return nil
		case err != nil:
			settle(e, OutcomeSkipped, err)
			return nil
		}
		dispatched++
		if o.DryRun {
			settle(e, OutcomeReplayed, nil)
			return nil
		}
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

// job is one record to replay and the subject target derived for it.
type job struct {
	e       Entry
	subject string
}

// replayOne republishes one record's task on subject and then deletes the
// record. It returns OutcomeReplayed or OutcomeDuplicate, OutcomeFailed with
// why, or 0 when ctx ended first (the record stays; a rerun replays it).
func (s *Store) replayOne(ctx context.Context, e Entry, subject string) (Outcome, error) {
	r := e.Record
	// The scan read e ahead, minutes ago for a rate-limited replay: another
	// replay or a purge may have removed it since, and past the duplicate
	// window JetStream would take its task as new. A record gone is not
	// republished.
	switch _, err := s.Get(ctx, e.Seq); {
	case errors.Is(err, ErrNotFound):
		return OutcomeDuplicate, nil
	case err != nil:
		if ctx.Err() != nil {
			return 0, nil
		}
		return OutcomeFailed, fmt.Errorf("record %d (task %s): %w", e.Seq, quoteField(r.TaskID), err)
	}
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
		if ctx.Err() != nil {
			return 0, nil
		}
		return OutcomeFailed, fmt.Errorf("record %d (task %s): republish to %s: %w", e.Seq, quoteField(r.TaskID), msg.Subject, err)
	}
	if err := s.Delete(ctx, e.Seq); err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		if _, gerr := s.Get(ctx, e.Seq); errors.Is(gerr, ErrNotFound) {
			// Another replay of the record deleted it first: the task is
			// stored once, by whichever publish JetStream took first.
			if ack.Duplicate {
				return OutcomeDuplicate, nil
			}
			return OutcomeReplayed, nil
		}
		return OutcomeFailed, fmt.Errorf("record %d (task %s): republished but not deleted (a rerun deletes it without republishing within the duplicate window): %w", e.Seq, quoteField(r.TaskID), err)
	}
	if ack.Duplicate {
		return OutcomeDuplicate, nil
	}
	return OutcomeReplayed, nil
}

// Purge deletes the selected records and returns how many. With an empty
// filter, or one with only BeforeSeq, it purges the stream up to there at
// once: the records stored when it began (or before BeforeSeq); records
// stored since stay.
func (s *Store) Purge(ctx context.Context, f *Filter) (int, error) {
	last, n, err := s.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	if f.onlyBefore() {
		upTo := last + 1
		if f.BeforeSeq > 0 && f.BeforeSeq < upTo {
			upTo = f.BeforeSeq
			c, err := s.Count(ctx, f)
			if err != nil {
				return 0, err
			}
			n = uint64(c)
		}
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			return 0, err
		}
		return int(n), st.Purge(ctx, jetstream.WithPurgeSequence(upTo))
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

// onlyBefore reports whether f selects every record but for BeforeSeq.
func (f *Filter) onlyBefore() bool {
	g := *f
	g.BeforeSeq = 0
	return g.IsZero()
}
