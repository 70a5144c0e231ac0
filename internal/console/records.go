package console

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
)

// groupsAnswer is GET /api/groups: the failure groups of the selection.
type groupsAnswer struct {
	Total  int          `json:"total"`
	Groups []*dlq.Group `json:"groups"`
}

// maxGroups caps the groups one answer lists.
const maxGroups = 500

func (c *Console) getGroups(w http.ResponseWriter, r *http.Request) {
	f, ok := c.queryFilter(w, r)
	if !ok {
		return
	}
	groups, total, err := c.store.Stats(r.Context(), f)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, groupsAnswer{Total: total, Groups: groups[:min(len(groups), maxGroups)]})
}

// recordItem is one record in a list.
type recordItem struct {
	Seq       uint64    `json:"seq"`
	Stored    time.Time `json:"stored"`
	Group     string    `json:"group"`
	NodeType  string    `json:"node_type"`
	Reason    string    `json:"reason"`
	ErrorKind string    `json:"error_kind"`
	TaskID    string    `json:"task_id"`
	Replays   int       `json:"replays"`
	Error     string    `json:"error"`
}

func itemOf(e dlq.Entry) recordItem {
	key := e.GroupKey()
	it := recordItem{Seq: e.Seq, Stored: e.Time, Group: key.ID(), NodeType: key.NodeType, Reason: key.Reason, ErrorKind: key.ErrorKind}
	if e.Record != nil {
		it.TaskID, it.Replays, it.Error = e.Record.TaskID, e.Record.ReplayCount(), e.Record.Error
	} else if e.Err != nil {
		it.Error = e.Err.Error()
	}
	return it
}

// recordsAnswer is GET /api/records: a page of records, newest first.
type recordsAnswer struct {
	Records []recordItem `json:"records"`
	Matched int          `json:"matched"`
	// Next is the before cursor of the next (older) page; 0 on the last.
	Next uint64 `json:"next,omitempty"`
	// Pinned is the filter of the records matched, as they stood: a purge
	// confirmed with Matched sends it, and reaches no record stored since.
	Pinned FilterSpec `json:"pinned"`
}

// maxPage caps a page of the console.
const maxPage = 500

func (c *Console) getRecords(w http.ResponseWriter, r *http.Request) {
	spec, err := filterFromQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	last, _, err := c.store.Snapshot(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	pinned := spec.pin(time.Now(), last)
	f, err := pinned.filter(time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	o := dlq.PageOptions{Limit: 50}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			writeError(w, http.StatusBadRequest, "limit: want 1 to "+strconv.Itoa(maxPage))
			return
		}
		o.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "before: want a record sequence")
			return
		}
		if f.BeforeSeq == 0 || n < f.BeforeSeq {
			f.BeforeSeq = n
		}
	}
	p, err := c.store.List(r.Context(), f, o)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	ans := recordsAnswer{Records: make([]recordItem, 0, len(p.Entries)), Matched: p.Matched, Next: p.Next, Pinned: pinned}
	for _, e := range p.Entries {
		ans.Records = append(ans.Records, itemOf(e))
	}
	writeJSON(w, http.StatusOK, ans)
}

// recordAnswer is GET /api/records/{seq}: one record whole, its task
// decoded for display (dlq.Describe), the same as dlq show --json.
type recordAnswer struct {
	dlq.View
	Group string `json:"group"`
	// Undecodable says why the message is not a record; View is empty then.
	Undecodable string `json:"undecodable,omitempty"`
}

func (c *Console) getRecord(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, "want a record sequence")
		return
	}
	e, err := c.store.Get(r.Context(), seq)
	switch {
	case errors.Is(err, dlq.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	ans := recordAnswer{Group: e.GroupKey().ID()}
	if e.Record == nil {
		ans.Seq, ans.Stored, ans.Undecodable = e.Seq, e.Time, e.Err.Error()
		writeJSON(w, http.StatusOK, ans)
		return
	}
	// Credentials a consumer masked stay masked; a record written by hand
	// is masked here too.
	e.Record.Headers = dlq.MaskHeaders(e.Record.Headers, dlq.DefaultMaskedHeaders)
	ans.View = dlq.Describe(e)
	writeJSON(w, http.StatusOK, ans)
}

// queryFilter reads the filter of a GET request, answering 400 when it is bad.
func (c *Console) queryFilter(w http.ResponseWriter, r *http.Request) (*dlq.Filter, bool) {
	spec, err := filterFromQuery(r.URL.Query())
	if err == nil {
		var f *dlq.Filter
		if f, err = spec.filter(time.Now()); err == nil {
			return f, true
		}
	}
	writeError(w, http.StatusBadRequest, err.Error())
	return nil, false
}
