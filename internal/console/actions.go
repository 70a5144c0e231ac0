package console

import (
	"fmt"
	"net/http"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/fleet"
)

// replayRequest is POST /api/replay.
type replayRequest struct {
	Filter FilterSpec `json:"filter"`
	// DryRun previews: what a replay would do, changing nothing.
	DryRun bool `json:"dry_run"`
	// Rate caps replays per second (0: as fast as JetStream acknowledges).
	Rate float64 `json:"rate,omitempty"`
	// Limit stops after this many records (0: all).
	Limit int `json:"limit,omitempty"`
	// MaxReplays skips tasks replayed this many times already unless
	// Force; nil means the command line's default, 3; 0 no cap.
	MaxReplays *int `json:"max_replays,omitempty"`
	Force      bool `json:"force,omitempty"`
}

// defaultMaxReplays is producer dlq replay's --max-replays default.
const defaultMaxReplays = 3

// previewAnswer is a dry run's answer: what the replay would do.
type previewAnswer struct {
	Summary dlq.ReplaySummary `json:"summary"`
	// Records are the first records it would replay (at most maxPreview).
	Records []recordItem `json:"records"`
	// Refused and Skipped say why records would stay (at most maxPreview each).
	Refused []string `json:"refused,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
	// Pinned is the filter previewed, bounded to the records that existed
	// then (FilterSpec.Through, At): the replay to run sends it.
	Pinned FilterSpec `json:"pinned"`
}

const maxPreview = 200

func (c *Console) postReplay(w http.ResponseWriter, r *http.Request) {
	var req replayRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.DryRun {
		// The preview pins the selection it shows: the replay it leads to
		// sends Pinned back and reaches no record stored since.
		last, _, err := c.store.Snapshot(r.Context())
		if err != nil {
			writeError(w, http.StatusBadGateway, err.Error())
			return
		}
		req.Filter = req.Filter.pin(time.Now(), last)
	}
	f, err := req.Filter.filter(time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	o := dlq.ReplayOptions{TaskPrefix: c.o.Names.TaskPrefix, DryRun: req.DryRun, Rate: req.Rate, Limit: req.Limit,
		MaxReplays: defaultMaxReplays, Force: req.Force}
	if req.MaxReplays != nil {
		o.MaxReplays = *req.MaxReplays
	}
	if err := o.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.DryRun {
		var ans previewAnswer
		o.OnRecord = func(e dlq.Entry, out dlq.Outcome, why error) {
			switch {
			case out == dlq.OutcomeReplayed && len(ans.Records) < maxPreview:
				ans.Records = append(ans.Records, itemOf(dlq.Brief(e)))
			case out == dlq.OutcomeRefused && len(ans.Refused) < maxPreview:
				ans.Refused = append(ans.Refused, why.Error())
			case out == dlq.OutcomeSkipped && len(ans.Skipped) < maxPreview:
				ans.Skipped = append(ans.Skipped, why.Error())
			}
		}
		sum, err := c.store.Replay(r.Context(), f, o)
		if err != nil {
			writeError(w, http.StatusBadGateway, err.Error())
			return
		}
		ans.Summary, ans.Pinned = sum, req.Filter
		if ans.Records == nil {
			ans.Records = []recordItem{}
		}
		writeJSON(w, http.StatusOK, ans)
		return
	}
	j := c.jobs.start(c.ctx, func(j *job) {
		j.o = o
		j.o.Progress = j.progress
		sum, err := c.store.Replay(j.ctx, f, j.o)
		j.finish(sum, err)
		c.o.Log.Info("console: replay finished", "job", j.ID, "filter", req.Filter, "selected", sum.Selected, "replayed", sum.Replayed,
			"duplicates", sum.Duplicates, "skipped", sum.Skipped, "refused", sum.Refused, "failed", sum.Failed, "error", errString(err))
	})
	c.o.Log.Info("console: replay started", "job", j.ID, "filter", req.Filter, "rate", req.Rate, "limit", req.Limit,
		"max_replays", o.MaxReplays, "force", req.Force, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, j.snapshot())
}

func (c *Console) getJob(w http.ResponseWriter, r *http.Request) {
	j := c.jobs.get(r.PathValue("id"))
	if j == nil {
		writeError(w, http.StatusNotFound, "no such job")
		return
	}
	writeJSON(w, http.StatusOK, j.snapshot())
}

func (c *Console) cancelJob(w http.ResponseWriter, r *http.Request) {
	j := c.jobs.get(r.PathValue("id"))
	if j == nil {
		writeError(w, http.StatusNotFound, "no such job")
		return
	}
	j.cancel()
	c.o.Log.Info("console: replay cancelled", "job", j.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, j.snapshot())
}

// purgeRequest is POST /api/purge. Confirm must be true, and Expect, when
// set, the count the operator was shown: if more records match now, the
// purge is refused. With the filter pinned when the count was shown
// (recordsAnswer.Pinned), no record stored since can be among them, so
// that a confirmation covers what it was given for.
type purgeRequest struct {
	Filter  FilterSpec `json:"filter"`
	Confirm bool       `json:"confirm"`
	Expect  *int       `json:"expect,omitempty"`
	// All must be set to purge with an empty filter: the whole queue.
	All bool `json:"all,omitempty"`
}

func (c *Console) postPurge(w http.ResponseWriter, r *http.Request) {
	var req purgeRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := req.Filter.filter(time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case !req.Confirm:
		writeError(w, http.StatusBadRequest, "purge deletes records for good: set confirm")
		return
	case selectsAll(f) && !req.All:
		writeError(w, http.StatusBadRequest, "an empty filter purges the whole dead-letter queue: set all")
		return
	}
	if req.Expect != nil {
		n, err := c.store.Count(r.Context(), f)
		if err != nil {
			writeError(w, http.StatusBadGateway, err.Error())
			return
		}
		if n > *req.Expect {
			writeError(w, http.StatusConflict, fmt.Sprintf("%d records match now, not the %d confirmed: look again", n, *req.Expect))
			return
		}
	}
	n, err := c.store.Purge(r.Context(), f)
	c.o.Log.Info("console: purge", "filter", req.Filter, "purged", n, "remote", r.RemoteAddr, "error", errString(err))
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("purged %d records, then: %v", n, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"purged": n})
}

// pauseRequest is POST /api/pause: For is a duration (30m); empty pauses
// until resumed.
type pauseRequest struct {
	For string `json:"for,omitempty"`
}

func (c *Console) postPause(w http.ResponseWriter, r *http.Request) {
	var req pauseRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	until := time.Now().Add(fleet.Forever)
	if req.For != "" {
		d, err := time.ParseDuration(req.For)
		if err != nil || d <= 0 || d > fleet.Forever/2 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("for %q: want a positive duration, e.g. 30m", req.For))
			return
		}
		until = time.Now().Add(d)
	}
	err := fleet.Pause(r.Context(), c.o.JS, c.o.Names, until)
	c.o.Log.Info("console: pause", "consumer", c.o.Names.Consumer, "for", req.For, "remote", r.RemoteAddr, "error", errString(err))
	c.answerAction(w, err)
}

func (c *Console) postResume(w http.ResponseWriter, r *http.Request) {
	if err := readJSON(r, &struct{}{}); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err := fleet.Resume(r.Context(), c.o.JS, c.o.Names)
	c.o.Log.Info("console: resume", "consumer", c.o.Names.Consumer, "remote", r.RemoteAddr, "error", errString(err))
	c.answerAction(w, err)
}

// breakerRequest is POST /api/breaker: close (reset) or open the breakers
// of every process, or of one.
type breakerRequest struct {
	Op      string `json:"op"` // "open" or "close"
	For     string `json:"for,omitempty"`
	Process string `json:"process,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (c *Console) postBreaker(w http.ResponseWriter, r *http.Request) {
	var req breakerRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	cmd := fleet.Command{By: c.o.By, Reason: req.Reason}
	switch req.Op {
	case fleet.OpClose:
		cmd.Op = fleet.OpClose
	case fleet.OpOpen:
		d, err := time.ParseDuration(req.For)
		if err != nil || d < time.Second || d > fleet.MaxManualOpen {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("for %q: want a duration from 1s to %v", req.For, fleet.MaxManualOpen))
			return
		}
		cmd.Op, cmd.Until = fleet.OpOpen, time.Now().Add(d)
	default:
		writeError(w, http.StatusBadRequest, `op: want "open" or "close"`)
		return
	}
	if req.Process != "" {
		if err := fleet.CheckProcessID(req.Process); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := cmd.Check(time.Now()); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sent, key, err := fleet.SendCommand(r.Context(), c.o.JS, c.o.Names, req.Process, cmd)
	c.o.Log.Info("console: breaker", "op", req.Op, "for", req.For, "process", req.Process, "reason", req.Reason, "by", c.o.By,
		"command", sent.ID, "key", key, "remote", r.RemoteAddr, "error", errString(err))
	c.answerAction(w, err)
}

// answerAction answers an action: {"ok":true}, or the error.
func (c *Console) answerAction(w http.ResponseWriter, err error) {
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
