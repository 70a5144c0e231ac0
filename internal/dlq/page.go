package dlq

import (
	"context"
	"errors"
	"fmt"
)

// Page sizes of List.
const (
	// DefaultPageSize is the size of a page when PageOptions.Limit is 0.
	DefaultPageSize = 50
	// MaxPageSize caps PageOptions.Limit: a page is held in memory whole.
	MaxPageSize = 100_000
)

// PageOptions choose how List pages. The zero value pages newest first,
// DefaultPageSize records at a time.
type PageOptions struct {
	// Limit is the most records on a page (0: DefaultPageSize).
	Limit int
	// Oldest pages from the oldest record forward; by default pages run
	// from the newest record back.
	Oldest bool
}

// Validate checks the options.
func (o PageOptions) Validate() error {
	if o.Limit < 0 || o.Limit > MaxPageSize {
		return fmt.Errorf("page size %d: want 1 to %d records", o.Limit, MaxPageSize)
	}
	return nil
}

func (o PageOptions) size() int {
	if o.Limit == 0 {
		return DefaultPageSize
	}
	return o.Limit
}

// Page is one page of records.
type Page struct {
	// Entries are the page's records in page order. They hold each record's
	// failure context, not the task it carries: Record.Data, Stack and
	// Causes are empty, Record.Headers holds only HeaderReplays (so that
	// ReplayCount works), and the text fields are cut to the bounds a
	// consumer writes (MaxErrorLen, ...), which keeps a page small whatever
	// the records hold. Get reads one record whole.
	Entries []Entry
	// Matched counts the records the filter selects. Newest first, that is
	// all of them, on this page and the pages after it (the stream is read
	// oldest first, so every one is read anyway); oldest first, the scan
	// stops after the page, and Matched is len(Entries).
	Matched int
	// Next is the cursor of the next page, 0 when this page is the last:
	// set the filter's BeforeSeq (newest first) or AfterSeq (oldest first)
	// to it and call List again.
	Next uint64
}

// errPageFull stops the scan of an oldest-first page.
var errPageFull = errors.New("page full")

// List returns one page of the records f selects, as they stood when it
// started. The filter's BeforeSeq and AfterSeq are the paging cursors:
// Page.Next says which to set for the next page.
func (s *Store) List(ctx context.Context, f *Filter, o PageOptions) (Page, error) {
	if err := o.Validate(); err != nil {
		return Page{}, err
	}
	size := o.size()
	var p Page
	var err error
	if o.Oldest {
		err = s.Scan(ctx, f, 0, func(e Entry) error {
			if len(p.Entries) == size {
				p.Next = p.Entries[size-1].Seq // one more matches: there is a next page
				return errPageFull
			}
			p.Entries = append(p.Entries, Brief(e))
			return nil
		})
		if err != nil && !errors.Is(err, errPageFull) {
			return Page{}, err
		}
		p.Matched = len(p.Entries)
		return p, nil
	}
	// Newest first: keep the last size records seen, in a ring.
	ring := make([]Entry, 0, min(size, 1024))
	err = s.Scan(ctx, f, 0, func(e Entry) error {
		if len(ring) < size {
			ring = append(ring, Brief(e))
		} else {
			ring[p.Matched%size] = Brief(e)
		}
		p.Matched++
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	p.Entries = make([]Entry, len(ring))
	for i := range ring {
		p.Entries[i] = ring[(p.Matched-1-i)%len(ring)] // the newest was stored last
	}
	if p.Matched > len(p.Entries) {
		p.Next = p.Entries[len(p.Entries)-1].Seq
	}
	return p, nil
}

// Brief returns e as a page holds it (see Page.Entries): without the task
// its record carries and its message headers, its text fields cut to the
// bounds a consumer writes. A dry run's preview lists records so, to stay
// small whatever a record written by hand holds.
func Brief(e Entry) Entry {
	e.Header = nil
	if e.Record == nil {
		return e
	}
	r := *e.Record
	r.Data, r.Stack, r.Causes, r.Headers = nil, "", nil, nil
	if vs, ok := e.Record.Headers[HeaderReplays]; ok {
		r.Headers = map[string][]string{HeaderReplays: vs[:min(len(vs), 1)]}
	}
	r.bound() // a record written by hand may carry more than a consumer writes
	e.Record = &r
	return e
}
