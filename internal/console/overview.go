package console

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/version"
)

// Overview is the fleet at a glance: the overview page's data, pushed to
// an open page every Options.Refresh.
type Overview struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"`
	// Status is the shared consumer's state with its processes; nil when
	// it could not be read, and StatusError says why.
	Status      *fleet.Status `json:"status,omitempty"`
	StatusError string        `json:"status_error,omitempty"`
	// Held sums the tasks the processes hold with their outcome because
	// the dead-letter stream refuses their records.
	Held int `json:"held"`
	// NodeTypes counts tasks and dead letters per node type, most first,
	// at most maxNodeTypes; NodeTypesLeftOut counts the others.
	NodeTypes        []NodeTypeCount `json:"node_types"`
	NodeTypesLeftOut int             `json:"node_types_left_out,omitempty"`
	NodeTypesError   string          `json:"node_types_error,omitempty"`
}

// NodeTypeCount is one node type's line of the overview.
type NodeTypeCount struct {
	NodeType string `json:"node_type"`
	// Queued are its tasks in the task stream: waiting, or delivered and
	// not yet acknowledged.
	Queued uint64 `json:"queued"`
	// DeadLetters are its records in the dead-letter stream.
	DeadLetters uint64 `json:"dead_letters"`
	// Processes are the live processes that run it.
	Processes int `json:"processes"`
}

// Bounds on the per-node-type counts: a stream with more subjects than
// maxSubjects is not broken down (its subject list is the size of it).
const (
	maxNodeTypes = 200
	maxSubjects  = 10_000
)

// readOverview reads the overview, at most once per half refresh period
// whatever the number of open pages. The read is shared, so it runs under
// the console's context, not a page's: a page that goes away mid-read
// must not leave "context canceled" as every page's overview.
func (c *Console) readOverview() *Overview {
	c.overviewMu.Lock()
	defer c.overviewMu.Unlock()
	if c.overview != nil && time.Since(c.overviewTime) < c.o.Refresh/2 {
		return c.overview
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	o := &Overview{Time: time.Now().UTC(), Version: version.String()}
	st, err := fleet.GetStatus(ctx, c.o.JS, c.o.Names)
	if err != nil {
		o.StatusError = err.Error()
	} else {
		o.Status = st
		for _, p := range st.Processes {
			o.Held += p.DLQHeld
		}
	}
	counts := map[string]*NodeTypeCount{}
	get := func(nodeType string) *NodeTypeCount {
		if counts[nodeType] == nil {
			counts[nodeType] = &NodeTypeCount{NodeType: nodeType}
		}
		return counts[nodeType]
	}
	for _, src := range []struct {
		stream, prefix string
		add            func(*NodeTypeCount, uint64)
	}{
		{c.o.Names.TaskStream, c.o.Names.TaskPrefix, func(n *NodeTypeCount, v uint64) { n.Queued += v }},
		{c.o.Names.DLQStream, c.o.Names.DLQPrefix, func(n *NodeTypeCount, v uint64) { n.DeadLetters += v }},
	} {
		subjects, err := c.subjectCounts(ctx, src.stream, src.prefix)
		if err != nil {
			o.NodeTypesError = strings.TrimPrefix(o.NodeTypesError+"; "+err.Error(), "; ")
			continue
		}
		for nodeType, n := range subjects {
			src.add(get(nodeType), n)
		}
	}
	if st != nil {
		for _, p := range st.Processes {
			seen := map[string]bool{} // an entry written by hand may list one twice
			for _, t := range p.NodeTypes {
				if !seen[t] {
					seen[t] = true
					get(t).Processes++
				}
			}
		}
	}
	for _, n := range counts {
		o.NodeTypes = append(o.NodeTypes, *n)
	}
	slices.SortFunc(o.NodeTypes, func(a, b NodeTypeCount) int {
		return cmp.Or(cmp.Compare(b.Queued+b.DeadLetters, a.Queued+a.DeadLetters), cmp.Compare(a.NodeType, b.NodeType))
	})
	if len(o.NodeTypes) > maxNodeTypes {
		o.NodeTypesLeftOut = len(o.NodeTypes) - maxNodeTypes
		o.NodeTypes = o.NodeTypes[:maxNodeTypes]
	}
	c.overview, c.overviewTime = o, time.Now()
	return o
}

// subjectCounts returns the messages per node type of a stream whose
// subjects are <prefix>.<node_type>.
func (c *Console) subjectCounts(ctx context.Context, stream, prefix string) (map[string]uint64, error) {
	s, err := c.o.JS.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	if info.State.NumSubjects > maxSubjects {
		return nil, fmt.Errorf("stream %s has %d subjects: too many to count per node type", stream, info.State.NumSubjects)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	info, err = s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subject, n := range info.State.Subjects {
		if t, ok := strings.CutPrefix(subject, prefix+"."); ok {
			out[t] += n
		}
	}
	return out, nil
}

func (c *Console) getOverview(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, c.readOverview())
}

// events pushes the overview to an open page as server-sent events, one
// every refresh period, until the page goes or the console closes.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(c.o.Refresh)
	defer tick.Stop()
	for {
		b, _ := json.Marshal(c.readOverview())
		if _, err := fmt.Fprintf(w, "event: overview\ndata: %s\n\n", b); err != nil {
			return
		}
		flusher.Flush()
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		case <-c.ctx.Done():
			return
		}
	}
}
