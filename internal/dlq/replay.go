package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// To, if set, is the subject every task is republished to instead of its original one.
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

// Replay republishes the original tasks of the selected records, as they
// stood when it started: records stored later are not included. Records are
// taken oldest first and replayed Concurrency at a time. A record is deleted
// only after JetStream acknowledged its task. The task carries its original
// headers, a Nodeq-Replays count one higher, and Nodeq-Replayed-From.
func (s *Store) Replay(ctx context.Context, f *Filter, o ReplayOptions) (ReplaySummary, error) {
	var sum ReplaySummary
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
	fail := func(format string, args ...any) {
		update(func() {
			sum.Failed++
			if len(sum.Errors) < 20 {
				sum.Errors = append(sum.Errors, fmt.Sprintf(format, args...))
			}
		})
	}

	jobs := make(chan Entry)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				if limiter != nil && limiter.Wait(ctx) != nil {
					continue // cancelled: drain without replaying
				}
				if ctx.Err() != nil {
					continue
				}
				s.replayOne(ctx, e, o, fail, func(duplicate bool) {
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
		skip := e.Record == nil || (o.MaxReplays > 0 && !o.Force && e.Record.ReplayCount() >= o.MaxReplays)
		if skip || o.DryRun {
			update(func() {
				sum.Selected++
				if skip {
					sum.Skipped++
				} else {
					sum.Replayed++
				}
			})
			if !skip {
				dispatched++
			}
			return nil
		}
		update(func() { sum.Selected++ })
		dispatched++
		select {
		case jobs <- e:
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

// replayOne republishes one record's task and then deletes the record.
func (s *Store) replayOne(ctx context.Context, e Entry, o ReplayOptions, fail func(string, ...any), done func(duplicate bool)) {
	r := e.Record
	msg := nats.NewMsg(r.Subject)
	if o.To != "" {
		msg.Subject = o.To
	}
	msg.Data = r.Data
	for k, vs := range r.Headers {
		msg.Header[k] = append([]string(nil), vs...)
	}
	msg.Header.Set(HeaderReplays, strconv.Itoa(r.ReplayCount()+1))
	msg.Header.Set(HeaderReplayedFrom, s.stream+":"+strconv.FormatUint(e.Seq, 10))
	msg.Header.Set(nats.MsgIdHdr, ReplayMsgID(s.stream, e.Seq))
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		if ctx.Err() == nil {
			fail("record %d (task %s): republish to %s: %v", e.Seq, r.TaskID, msg.Subject, err)
		}
		return
	}
	if err := s.Delete(ctx, e.Seq); err != nil {
		if ctx.Err() == nil {
			fail("record %d (task %s): republished but not deleted (a rerun deletes it without republishing within the duplicate window): %v", e.Seq, r.TaskID, err)
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
