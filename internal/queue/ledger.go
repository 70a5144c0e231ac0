package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LedgerBucket is the Key-Value bucket of the delivery ledger, one key per
// task that was handed back or redelivered at least once.
const LedgerBucket = "nodeq_deliveries"

// LedgerMaxAge is how long the ledger remembers a task: longer than any
// task waits between two deliveries (redelivery backoff, breaker cooldown,
// a pause for maintenance).
const LedgerMaxAge = 7 * 24 * time.Hour

// Tally is what the ledger knows about one task's deliveries: how many of
// them ended with the consumer handing the task back (breaker, shutdown, a
// dead-letter stream that refused the record) and how many with a
// redelivery after its attempts failed. Every other delivery but the
// current one ended without an outcome: the process died, hung or lost its
// connection, and the server redelivered the task after AckWait.
//
// Such a delivery does not say which task took the process down: every
// task it held lost its delivery. So a task with a delivery like that runs
// alone in its process the next time (a solo run), and only solo runs that
// end without an outcome count toward calling it poison.
type Tally struct {
	HandedBack  int `json:"h,omitempty"`
	Redelivered int `json:"r,omitempty"`
	// Solo counts solo runs started, SoloDone those that reached an
	// outcome other than a final one (which removes the entry).
	Solo     int `json:"s,omitempty"`
	SoloDone int `json:"sd,omitempty"`
	// Probed counts the task's failed runs as a circuit breaker's probe.
	// Only the first is a hand-back (not charged); later ones are charged,
	// so that tasks failing whatever the downstream does cannot keep a
	// breaker open between them for ever.
	Probed int `json:"p,omitempty"`
}

// Unsettled is how many of the deliveries before the current one, the
// deliveries-th, ended without an outcome.
func (t Tally) Unsettled(deliveries int) int {
	return max(deliveries-1-t.HandedBack-t.Redelivered, 0)
}

// SoloCrashes is how many solo runs ended without an outcome: each took
// down, hung or disconnected a process that ran nothing else.
func (t Tally) SoloCrashes() int {
	return max(t.Solo-t.SoloDone, 0)
}

// Charged is how many deliveries count toward dead-lettering a task whose
// attempts keep failing: a hand-back is not the task's fault.
func (t Tally) Charged(deliveries int) int {
	return max(deliveries-t.HandedBack, 1)
}

// bound clamps counts read from the shared bucket to what deliveries
// allows: the entry is shared state, and a wrong one must not make a task
// look poisonous or immortal by more than it could be.
func (t Tally) bound(deliveries int) Tally {
	prior := max(deliveries-1, 0)
	t.HandedBack = min(max(t.HandedBack, 0), prior)
	t.Redelivered = min(max(t.Redelivered, 0), prior-t.HandedBack)
	t.Solo = min(max(t.Solo, 0), prior)
	t.SoloDone = min(max(t.SoloDone, 0), t.Solo)
	t.Probed = min(max(t.Probed, 0), prior)
	return t
}

// DeliveryLedger records, in a Key-Value bucket shared by the fleet, the
// deliveries of a task that ended with a hand-back or a redelivery. With
// JetStream's own delivery count it tells a task that keeps taking down
// the process running it (a poison task) from one that is merely handed
// back. Only tasks delivered more than once cost a lookup; a task's first
// delivery costs nothing.
type DeliveryLedger struct {
	kv     jetstream.KeyValue
	prefix string // <task stream>.<consumer>.
	log    *slog.Logger
}

// LedgerConfig is the delivery ledger bucket's configuration.
func LedgerConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: LedgerBucket, Description: "nodeq delivery ledger: hand-backs and redeliveries per task",
		History: 1, TTL: LedgerMaxAge, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// OpenDeliveryLedger opens the ledger bucket, which EnsureStreams creates.
func OpenDeliveryLedger(ctx context.Context, js jetstream.JetStream, n Names, log *slog.Logger) (*DeliveryLedger, error) {
	if log == nil {
		log = slog.Default()
	}
	var kv jetstream.KeyValue
	err := retryCreate(ctx, log, "delivery ledger bucket "+LedgerBucket, func(ctx context.Context) error {
		return apiCall(ctx, js, "STREAM.INFO.KV_"+LedgerBucket, func(ctx context.Context) error {
			var err error
			kv, err = js.KeyValue(ctx, LedgerBucket)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("delivery ledger bucket %s: %w", LedgerBucket, err)
	}
	return &DeliveryLedger{kv: kv, prefix: kvToken(n.TaskStream) + "." + kvToken(n.Consumer) + ".", log: log}, nil
}

// ensureLedger creates the ledger bucket if it does not exist.
func ensureLedger(ctx context.Context, js jetstream.JetStream, replicas int) error {
	err := apiCall(ctx, js, "STREAM.INFO.KV_"+LedgerBucket, func(ctx context.Context) error {
		_, err := js.KeyValue(ctx, LedgerBucket)
		return err
	})
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return err
	}
	// nats.go asks for the account's JetStream info before creating a bucket.
	err = apiCall(ctx, js, "INFO", func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
	if err == nil {
		err = apiCall(ctx, js, "STREAM.CREATE.KV_"+LedgerBucket, func(ctx context.Context) error {
			_, err := js.CreateKeyValue(ctx, LedgerConfig(replicas))
			if errors.Is(err, jetstream.ErrBucketExists) {
				return nil // another process was faster
			}
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("create the delivery ledger bucket %s: %w (docs/security.md, Least privilege)", LedgerBucket, err)
	}
	return nil
}

func (l *DeliveryLedger) key(seq uint64) string { return l.prefix + strconv.FormatUint(seq, 10) }

// Tally returns what the ledger knows about the task at stream sequence
// seq, bounded by its current delivery count, and whether it has an entry.
func (l *DeliveryLedger) Tally(ctx context.Context, seq uint64, deliveries int) (Tally, bool, error) {
	entry, err := l.kv.Get(ctx, l.key(seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Tally{}, false, nil
	}
	if err != nil {
		return Tally{}, false, err
	}
	var t Tally
	if err := json.Unmarshal(entry.Value(), &t); err != nil {
		l.log.Warn("delivery ledger: ignoring a malformed entry", "key", l.key(seq), "err", err)
		return Tally{}, true, nil
	}
	return t.bound(deliveries), true, nil
}

// Add adds d to the task's tally with compare-and-set, creating the entry
// if needed.
func (l *DeliveryLedger) Add(ctx context.Context, seq uint64, d Tally) error {
	key := l.key(seq)
	for {
		var t Tally
		var rev uint64
		entry, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = entry.Revision()
			_ = json.Unmarshal(entry.Value(), &t) // a malformed entry starts again from zero
		}
		t.HandedBack += d.HandedBack
		t.Redelivered += d.Redelivered
		t.Solo += d.Solo
		t.SoloDone += d.SoloDone
		t.Probed += d.Probed
		b, _ := json.Marshal(t)
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, b)
		} else {
			_, err = l.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
			errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
		if !conflict {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Someone wrote the entry between read and write: read it again.
	}
}

// Forget removes the task's entry once the task reached a final outcome.
func (l *DeliveryLedger) Forget(ctx context.Context, seq uint64) error {
	return l.kv.Purge(ctx, l.key(seq))
}

// kvToken makes s usable as one token of a Key-Value key, whose characters
// are limited to [-/_=.a-zA-Z0-9]: any other byte becomes =XX (hex).
func kvToken(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			out = append(out, c)
			continue
		}
		out = fmt.Appendf(out, "=%02X", c)
	}
	return string(out)
}

// HeldReport is a consumer process's report, in the ledger bucket, that it
// holds tasks whose dead-letter records the dead-letter stream refused.
// It is refreshed while tasks are held (at least every HeldReportEvery)
// and removed when none is.
type HeldReport struct {
	Tasks int       `json:"tasks"`
	Since time.Time `json:"since"`
	Error string    `json:"error,omitempty"`
}

// HeldReportEvery is how often a process holding tasks refreshes its
// report; a report older than three times this is from a process that
// is gone, and status ignores it.
const HeldReportEvery = 30 * time.Second

// maxHeldError bounds the error text of a report.
const maxHeldError = 512

func (l *DeliveryLedger) heldKey(process string) string { return l.prefix + "held." + kvToken(process) }

// ReportHeld publishes process's report; a report of no tasks removes it.
func (l *DeliveryLedger) ReportHeld(ctx context.Context, process string, r HeldReport) error {
	if r.Tasks <= 0 {
		return l.kv.Purge(ctx, l.heldKey(process))
	}
	if len(r.Error) > maxHeldError {
		r.Error = r.Error[:maxHeldError]
	}
	b, _ := json.Marshal(r)
	_, err := l.kv.Put(ctx, l.heldKey(process), b)
	return err
}

// HeldSummary sums the fleet's current held reports.
type HeldSummary struct {
	// Tasks held, by Processes processes, the oldest since Since.
	Tasks     int       `json:"tasks"`
	Processes int       `json:"processes"`
	Since     time.Time `json:"since,omitzero"`
	// Error is the most recent refusal reported (untrusted text: a
	// display must escape it).
	Error string `json:"error,omitempty"`
}

// maxHeldReports bounds how many current reports a summary reads, and
// maxHeldKeys how many keys (current or left by processes that died).
const (
	maxHeldReports = 256
	maxHeldKeys    = 4096
)

// readHeld sums the held reports of one task stream and consumer.
// ReadHeldSummary sums the consumers' reports of failed tasks they hold
// because the dead-letter stream refuses their records.
func ReadHeldSummary(ctx context.Context, js jetstream.JetStream, n Names) (HeldSummary, error) {
	kv, err := js.KeyValue(ctx, LedgerBucket)
	if err != nil {
		return HeldSummary{}, fmt.Errorf("delivery ledger %s: %w", LedgerBucket, err)
	}
	s, err := readHeld(ctx, kv, n)
	if err != nil {
		return s, fmt.Errorf("delivery ledger %s: %w", LedgerBucket, err)
	}
	return s, nil
}

func readHeld(ctx context.Context, kv jetstream.KeyValue, n Names) (HeldSummary, error) {
	var s HeldSummary
	prefix := kvToken(n.TaskStream) + "." + kvToken(n.Consumer) + ".held."
	lister, err := kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return s, err
	}
	defer func() { _ = lister.Stop() }()
	var latest time.Time
	listed := 0
	for key := range lister.Keys() {
		if listed++; listed > maxHeldKeys || s.Processes >= maxHeldReports {
			break
		}
		entry, err := kv.Get(ctx, key)
		if err != nil || time.Since(entry.Created()) > 3*HeldReportEvery {
			continue // gone, or from a process that stopped reporting
		}
		var r HeldReport
		if json.Unmarshal(entry.Value(), &r) != nil || r.Tasks <= 0 {
			continue
		}
		s.Tasks += min(r.Tasks, 1<<20)
		s.Processes++
		if since := r.Since; !since.IsZero() && since.Before(entry.Created()) && (s.Since.IsZero() || since.Before(s.Since)) {
			s.Since = since.UTC()
		}
		if entry.Created().After(latest) {
			latest, s.Error = entry.Created(), r.Error
		}
	}
	if len(s.Error) > maxHeldError {
		s.Error = s.Error[:maxHeldError]
	}
	return s, nil
}
