package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/resilience"
)

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // served as JSON with nosniff: "<n>" reads as written
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

// isJSON reports whether a Content-Type is JSON, parameters aside.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// readJSON decodes a request body into v, refusing unknown fields and
// trailing data.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("request body over %d bytes", tooBig.Limit)
		}
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: more than one JSON value")
	}
	return nil
}

// FilterSpec is a record selection as the console's API takes it: in a
// JSON body, or as query parameters of the same names (lists
// comma-separated). All set fields must match.
type FilterSpec struct {
	Group     string   `json:"group,omitempty"`
	Seqs      []uint64 `json:"seqs,omitempty"`
	NodeTypes []string `json:"node_types,omitempty"`
	Kinds     []string `json:"kinds,omitempty"`
	Reasons   []string `json:"reasons,omitempty"`
	// Since and Until are RFC 3339 times, dates, or ages (2h, 3d).
	Since  string `json:"since,omitempty"`
	Until  string `json:"until,omitempty"`
	TaskID string `json:"task_id,omitempty"`
	Match  string `json:"match,omitempty"`
	// Through, when set, bounds the selection to the records stored at or
	// before this sequence, and At is the time ages (since, until) count
	// back from: a selection pinned when an operator was shown it (the
	// pinned filter of a dry run or of GET /api/records), so that acting
	// on it later reaches no record stored since, and no record an age
	// lets in later.
	Through uint64    `json:"through,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// pin returns the spec bounded to the dead-letter stream as it stands at
// last, its ages counted back from now, keeping a tighter bound it has.
func (s FilterSpec) pin(now time.Time, last uint64) FilterSpec {
	if s.At.IsZero() {
		s.At = now.UTC()
	}
	if s.Through == 0 || s.Through > last {
		s.Through = last
	}
	return s
}

// selectsAll reports whether f selects every record but for the bound
// a pinned selection adds (BeforeSeq).
func selectsAll(f *dlq.Filter) bool {
	g := *f
	g.BeforeSeq = 0
	return g.IsZero()
}

// maxFilterText caps the free-text fields of a filter.
const maxFilterText = 1024

// filter checks the spec and returns the filter it makes, ages counted
// back from now.
func (s FilterSpec) filter(now time.Time) (*dlq.Filter, error) {
	f := &dlq.Filter{Group: s.Group, Seqs: s.Seqs, NodeTypes: s.NodeTypes, Kinds: s.Kinds, Reasons: s.Reasons, TaskID: s.TaskID, Match: s.Match}
	if !s.At.IsZero() {
		now = s.At
	}
	if s.Through > 0 {
		f.BeforeSeq = s.Through + 1
	}
	if len(s.TaskID) > maxFilterText || len(s.Match) > maxFilterText {
		return nil, fmt.Errorf("task_id and match: at most %d bytes", maxFilterText)
	}
	for _, k := range s.Kinds {
		if _, err := resilience.ParseKind(k); err != nil {
			return nil, err
		}
	}
	var err error
	if s.Since != "" {
		if f.Since, err = dlq.ParseTime(s.Since, now); err != nil {
			return nil, fmt.Errorf("since: %w", err)
		}
	}
	if s.Until != "" {
		if f.Until, err = dlq.ParseTime(s.Until, now); err != nil {
			return nil, fmt.Errorf("until: %w", err)
		}
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// filterFromQuery reads a FilterSpec from query parameters.
func filterFromQuery(q url.Values) (FilterSpec, error) {
	list := func(k string) []string {
		var out []string
		for _, v := range q[k] {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	s := FilterSpec{Group: q.Get("group"), NodeTypes: list("node_types"), Kinds: list("kinds"), Reasons: list("reasons"),
		Since: q.Get("since"), Until: q.Get("until"), TaskID: q.Get("task_id"), Match: q.Get("match")}
	if v := q.Get("through"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("through: %q is not a record sequence", v)
		}
		s.Through = n
	}
	if v := q.Get("at"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return s, fmt.Errorf("at: %q is not an RFC 3339 time", v)
		}
		s.At = t
	}
	for _, v := range list("seqs") {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("seqs: %q is not a record sequence", v)
		}
		s.Seqs = append(s.Seqs, seq)
	}
	return s, nil
}

// String is the filter as compact JSON, for the log.
func (s FilterSpec) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}
