package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// ProcessList is what ListProcesses read of the process registry.
type ProcessList struct {
	// Processes are the live entries, by ID, at most MaxProcesses.
	Processes []ProcessInfo
	// LeftOut counts the entries not listed: beyond MaxProcesses, or not
	// read because the scan stops after maxScanned entries (those may
	// include removed and expired ones).
	LeftOut int
	// Malformed counts the entries skipped as unreadable: too large, not
	// JSON, without an ID, or under a key that is not their ID's.
	Malformed int
}

// listTimeout bounds a listing, whatever the caller's context allows.
const listTimeout = 10 * time.Second

// drainTimeout bounds the wait for a stopped watch to hand over what it
// still had.
const drainTimeout = time.Second

// listLimits bounds a listing; tests make them small.
type listLimits struct {
	processes, scanned int
}

var defaultListLimits = listLimits{processes: MaxProcesses, scanned: maxScanned}

// ListProcesses returns the live processes of the durable consumer n
// names, as their registry entries describe them: entries older than the
// bucket's TTL (bounded to 1s..10m, 30s when it has none) are ignored
// even if the server still has them; malformed ones are skipped and
// counted; at most MaxProcesses are listed, and at most 4×MaxProcesses
// entries read, within 10s. No bucket yet means no process.
func ListProcesses(ctx context.Context, js jetstream.JetStream, n queue.Names) (ProcessList, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	var kv jetstream.KeyValue
	var ttl time.Duration
	err := queue.CallAPI(ctx, js, "STREAM.INFO.KV_"+ProcessBucket, func(ctx context.Context) error {
		var err error
		if kv, err = js.KeyValue(ctx, ProcessBucket); err != nil {
			return err
		}
		st, err := kv.Status(ctx)
		if err == nil {
			ttl = st.TTL()
		}
		return err
	})
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ProcessList{Processes: []ProcessInfo{}}, nil
	}
	if err != nil {
		return ProcessList{}, fmt.Errorf("process registry %s: %w", ProcessBucket, err)
	}
	list, err := listProcesses(ctx, js, kv, n, processTTL(ttl), time.Now(), defaultListLimits)
	if err != nil {
		return ProcessList{}, fmt.Errorf("process registry %s: %w", ProcessBucket, err)
	}
	return list, nil
}

// listProcesses reads the entries under n's prefix with one watch (the
// latest value of each key, deletes ignored), until the end of the
// current values, the scan limit or ctx's end.
func listProcesses(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, n queue.Names, ttl time.Duration, now time.Time, lim listLimits) (ProcessList, error) {
	list := ProcessList{Processes: []ProcessInfo{}}
	filter := processPrefix(n) + ">"
	// The watch lives as long as the context it is created with, and
	// CallAPI's ends when it returns: set the watch up apart, under
	// CallAPI, so that a refused consumer create fails at once.
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	var w jetstream.KeyWatcher
	err := queue.CallAPI(ctx, js, "", func(callCtx context.Context) error {
		type watch struct {
			w   jetstream.KeyWatcher
			err error
		}
		ready := make(chan watch, 1)
		go func() {
			w, err := kv.Watch(wctx, filter, jetstream.IgnoreDeletes())
			ready <- watch{w, err}
		}()
		select {
		case r := <-ready:
			w = r.w
			return r.err
		case <-callCtx.Done():
			stopWatching()
			if r := <-ready; r.w != nil {
				stopWatch(r.w)
			}
			return callCtx.Err()
		}
	})
	if err != nil {
		return list, fmt.Errorf("watch %s: %w", filter, err)
	}
	defer stopWatch(w)
	scanned := 0
	for {
		var entry jetstream.KeyValueEntry
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return list, errors.New("the watch ended before the current entries came")
			}
			entry = e
		case <-ctx.Done():
			return list, fmt.Errorf("listing the entries: %w (%d read)", ctx.Err(), scanned)
		}
		if entry == nil { // every current entry came
			break
		}
		if scanned++; scanned > lim.scanned {
			list.LeftOut += 1 + int(min(entry.Delta(), uint64(maxCount)))
			break
		}
		p, err := readProcess(entry, n)
		switch {
		case err != nil:
			list.Malformed++
		case now.Sub(p.LastSeen) > ttl:
			// Expired: the server removes it soon.
		case len(list.Processes) >= lim.processes:
			list.LeftOut++
		default:
			list.Processes = append(list.Processes, p)
		}
	}
	slices.SortFunc(list.Processes, func(a, b ProcessInfo) int { return cmp.Compare(a.ID, b.ID) })
	return list, nil
}

// stopWatch stops w and takes what it still hands over, so that its
// delivery goroutine, which may be blocked handing over an entry, ends.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-timer.C:
			return
		}
	}
}
