package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// logBuffer collects the console's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fixture is a console over a real embedded nats-server with nodeq's
// streams and consumer.
type fixture struct {
	t     *testing.T
	js    jetstream.JetStream
	names queue.Names
	store *dlq.Store
	con   *Console
	srv   *httptest.Server
	log   *logBuffer
}

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	names := queue.DefaultNames()
	if err := queue.EnsureStreams(t.Context(), js, names, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(t.Context(), js, names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, js: js, names: names, store: dlq.NewStore(js, names.DLQStream, names.DLQPrefix), log: &logBuffer{}}
	o := Options{JS: js, Names: names, Log: slog.New(slog.NewTextHandler(f.log, nil)), By: "tester@host", Refresh: 200 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	con, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	f.con = con
	f.srv = httptest.NewServer(con.Handler())
	t.Cleanup(func() { con.Close(); f.srv.Close() })
	return f
}

// writeRecords stores n records of one failure of node type "resize",
// each carrying a task with an Authorization header.
func (f *fixture) writeRecords(n int, msg string) {
	f.t.Helper()
	w := dlq.NewWriter(f.js, f.names.DLQPrefix)
	for i := range n {
		env := &task.Envelope{ID: fmt.Sprintf("task-7hX2kq%03d", i), NodeType: "resize", Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		m, err := queue.NewPublisher(f.js, f.names).Message(env)
		if err != nil {
			f.t.Fatal(err)
		}
		m.Header.Set("Authorization", "Bearer hunter2")
		r := &dlq.Record{Reason: dlq.ReasonExhausted, TaskID: env.ID, NodeType: "resize", ErrorKind: "Transport",
			Error: fmt.Sprintf(msg, i), Subject: m.Subject, Stream: f.names.TaskStream, Sequence: uint64(1000 + i), Headers: m.Header, Data: m.Data}
		if _, err := w.Write(context.Background(), r); err != nil {
			f.t.Fatal(err)
		}
	}
}

// do sends a request and returns the status and the body.
func (f *fixture) do(method, path, body string, hdr map[string]string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// post sends a JSON body and decodes the answer into out (if not nil).
func (f *fixture) post(path string, body any, out any) int {
	f.t.Helper()
	b, _ := json.Marshal(body)
	status, ans := f.do("POST", path, string(b), nil)
	if out != nil && status < 300 {
		if err := json.Unmarshal([]byte(ans), out); err != nil {
			f.t.Fatalf("%s: %v in %q", path, err, ans)
		}
	}
	return status
}

func (f *fixture) count() int {
	f.t.Helper()
	n, err := f.store.Count(context.Background(), &dlq.Filter{})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestRequestChecks: who and what the console refuses.
func TestRequestChecks(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		want   int
	}{
		{"the page", "GET", "/", "", nil, http.StatusOK},
		{"the API", "GET", "/api/overview", "", nil, http.StatusOK},
		{"a rebinding site's host", "GET", "/api/overview", "", map[string]string{"Host": "evil.example:8089"}, http.StatusMisdirectedRequest},
		{"localhost", "GET", "/api/overview", "", map[string]string{"Host": "localhost:8089"}, http.StatusOK},
		{"ipv6 loopback", "GET", "/api/overview", "", map[string]string{"Host": "[::1]:8089"}, http.StatusOK},
		{"a cross-site post", "POST", "/api/resume", "{}", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"a cross-origin post without fetch metadata", "POST", "/api/resume", "{}", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"a form post", "POST", "/api/resume", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"a text post", "POST", "/api/resume", "", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"a same-origin post", "POST", "/api/resume", "{}", map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"unknown fields", "POST", "/api/resume", `{"x":1}`, nil, http.StatusBadRequest},
		{"two values", "POST", "/api/resume", `{}{}`, nil, http.StatusBadRequest},
		{"a huge body", "POST", "/api/purge", `{"filter":{"match":"` + strings.Repeat("a", 100<<10) + `"}}`, nil, http.StatusBadRequest},
		{"a GET that would change", "GET", "/api/purge", "", nil, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, body := f.do(tc.method, tc.path, tc.body, tc.hdr); status != tc.want {
				t.Errorf("%s %s: %d %q, want %d", tc.method, tc.path, status, body, tc.want)
			}
		})
	}
	status, _ := f.do("GET", "/", "", nil)
	if status != http.StatusOK {
		t.Fatal(status)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/app.js", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"} {
		if res.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if !strings.Contains(f.log.String(), "request refused") {
		t.Error("refused requests are not logged")
	}
}

// TestToken: with a token, nothing but the sign-in page is served
// without it; the sign-in sets a cookie that is then enough.
func TestToken(t *testing.T) {
	token := "a-long-enough-secret-token"
	f := newFixture(t, func(o *Options) { o.Token = token })
	if status, _ := f.do("GET", "/api/overview", "", nil); status != http.StatusUnauthorized {
		t.Errorf("API without the token: %d", status)
	}
	if status, _ := f.do("GET", "/app.js", "", nil); status != http.StatusUnauthorized {
		t.Errorf("script without the token: %d", status)
	}
	if status, _ := f.do("GET", "/", "", nil); status != http.StatusSeeOther {
		t.Errorf("page without the token: %d, want a redirect to sign in", status)
	}
	if status, body := f.do("GET", "/login.html", "", nil); status != http.StatusOK || !strings.Contains(body, `name="token"`) {
		t.Errorf("sign-in page: %d", status)
	}
	if status, _ := f.do("GET", "/api/overview", "", map[string]string{"Authorization": "Bearer " + token}); status != http.StatusOK {
		t.Errorf("API with the token: %d", status)
	}
	login := func(tok string) *http.Response {
		req, _ := http.NewRequest("POST", f.srv.URL+"/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := login("wrong"); len(res.Cookies()) != 0 || !strings.Contains(res.Header.Get("Location"), "failed") {
		t.Errorf("a wrong token signed in: %v", res.Cookies())
	}
	res := login(token)
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == cookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in cookie %+v", cookie)
	}
	if status, _ := f.do("GET", "/api/overview", "", map[string]string{"Cookie": cookie.String()}); status != http.StatusOK {
		t.Errorf("API with the cookie: %d", status)
	}
	if strings.Contains(f.log.String(), token) {
		t.Error("the token is in the log")
	}
}

// TestFailuresAndRecords: groups, pages of a group, and one record with
// its credentials masked and its task decoded.
func TestFailuresAndRecords(t *testing.T) {
	f := newFixture(t, nil)
	f.writeRecords(4, "dial tcp 10.0.0.%d:5432: i/o timeout")
	f.writeRecords(1, "permission denied %d")
	var groups groupsAnswer
	if status, body := f.do("GET", "/api/groups", "", nil); status != http.StatusOK || json.Unmarshal([]byte(body), &groups) != nil {
		t.Fatalf("groups: %d %s", status, body)
	}
	if groups.Total != 5 || len(groups.Groups) != 2 || groups.Groups[0].Count != 4 || groups.Groups[0].Fingerprint != "dial tcp <addr>: i/o timeout" {
		t.Fatalf("groups %+v", groups)
	}
	id := groups.Groups[0].ID
	var page recordsAnswer
	status, body := f.do("GET", "/api/records?group="+id+"&limit=3", "", nil)
	if status != http.StatusOK || json.Unmarshal([]byte(body), &page) != nil || len(page.Records) != 3 || page.Matched != 4 || page.Next == 0 {
		t.Fatalf("page 1: %d %s", status, body)
	}
	status, body = f.do("GET", fmt.Sprintf("/api/records?group=%s&limit=3&before=%d", id, page.Next), "", nil)
	page = recordsAnswer{}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &page) != nil || len(page.Records) != 1 || page.Next != 0 {
		t.Fatalf("page 2: %d %s", status, body)
	}
	status, body = f.do("GET", fmt.Sprintf("/api/records/%d", page.Records[0].Seq), "", nil)
	if status != http.StatusOK || !strings.Contains(body, dlq.Masked) || strings.Contains(body, "hunter2") || !strings.Contains(body, `"payload":{"n":0}`) {
		t.Errorf("record: %d %s", status, body)
	}
	for _, tc := range []struct{ path, want string }{
		{"/api/records/999", "no such record"},
		{"/api/records/x", "want a record sequence"},
		{"/api/groups?kinds=NoSuchKind", "unknown error kind"},
		{"/api/groups?reasons=unknown-node-type", "want one of"},
		{"/api/groups?group=../../x", "want a group ID"},
		{"/api/groups?node_types=tasks.%3E", "not a node type"},
		{"/api/groups?since=yesterday", "not a time"},
		{"/api/records?limit=100000", "limit"},
	} {
		if status, body := f.do("GET", tc.path, "", nil); status < 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want an error with %q", tc.path, status, body, tc.want)
		}
	}
}

// TestReplayAndPurge: a dry run changes nothing; a replay runs as a job
// to its end; a purge needs confirm, and a count no lower than now.
func TestReplayAndPurge(t *testing.T) {
	f := newFixture(t, nil)
	f.writeRecords(3, "upstream %d down")
	var preview previewAnswer
	if status := f.post("/api/replay", map[string]any{"filter": map[string]any{"node_types": []string{"resize"}}, "dry_run": true}, &preview); status != http.StatusOK {
		t.Fatalf("dry run: %d", status)
	}
	if preview.Summary.Replayed != 3 || len(preview.Records) != 3 || f.count() != 3 {
		t.Fatalf("dry run %+v; %d records left", preview.Summary, f.count())
	}
	var job JobState
	if status := f.post("/api/replay", map[string]any{"filter": map[string]any{"seqs": []uint64{1, 2}}, "rate": 100}, &job); status != http.StatusAccepted || job.ID == "" {
		t.Fatalf("replay: %d %+v", status, job)
	}
	for deadline := time.Now().Add(10 * time.Second); !job.Done; {
		if time.Now().After(deadline) {
			t.Fatalf("replay did not end: %+v", job)
		}
		time.Sleep(20 * time.Millisecond)
		_, body := f.do("GET", "/api/jobs/"+job.ID, "", nil)
		if err := json.Unmarshal([]byte(body), &job); err != nil {
			t.Fatal(err)
		}
	}
	if job.Summary.Replayed != 2 || job.Error != "" || f.count() != 1 {
		t.Fatalf("job %+v; %d records left", job, f.count())
	}
	if status, _ := f.do("GET", "/api/jobs/nope", "", nil); status != http.StatusNotFound {
		t.Errorf("unknown job: %d", status)
	}
	// The replayed tasks are in the task stream again.
	if info, err := f.js.Stream(t.Context(), f.names.TaskStream); err != nil {
		t.Fatal(err)
	} else if si, err := info.Info(t.Context()); err != nil || si.State.Msgs != 2 {
		t.Fatalf("task stream holds %d, %v", si.State.Msgs, err)
	}

	f.writeRecords(2, "later %d")
	one := 1
	for _, tc := range []struct {
		name string
		body map[string]any
		want int
	}{
		{"without confirm", map[string]any{"filter": map[string]any{"node_types": []string{"resize"}}}, http.StatusBadRequest},
		{"everything, not said so", map[string]any{"filter": map[string]any{}, "confirm": true}, http.StatusBadRequest},
		{"more than confirmed", map[string]any{"filter": map[string]any{"node_types": []string{"resize"}}, "confirm": true, "expect": one}, http.StatusConflict},
	} {
		if status := f.post("/api/purge", tc.body, nil); status != tc.want || f.count() != 3 {
			t.Errorf("%s: %d (want %d), %d records left", tc.name, status, tc.want, f.count())
		}
	}
	var purged map[string]int
	if status := f.post("/api/purge", map[string]any{"filter": map[string]any{"node_types": []string{"resize"}}, "confirm": true, "expect": 3}, &purged); status != http.StatusOK || purged["purged"] != 3 || f.count() != 0 {
		t.Fatalf("purge: %d %v, %d left", status, purged, f.count())
	}
	for _, want := range []string{"console: replay started", "console: replay finished", "console: purge"} {
		if !strings.Contains(f.log.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, f.log.String())
		}
	}
}

// TestFleetActions: pause and resume the consumer on the server; breaker
// commands reach the control bucket.
func TestFleetActions(t *testing.T) {
	f := newFixture(t, nil)
	if status := f.post("/api/pause", map[string]any{"for": "30m"}, nil); status != http.StatusOK {
		t.Fatalf("pause: %d", status)
	}
	st, err := fleet.GetStatus(t.Context(), f.js, f.names)
	if err != nil || !st.Paused || time.Until(st.PausedUntil) > 31*time.Minute {
		t.Fatalf("after pause: %+v, %v", st, err)
	}
	if status := f.post("/api/resume", map[string]any{}, nil); status != http.StatusOK {
		t.Fatalf("resume: %d", status)
	}
	if st, err := fleet.GetStatus(t.Context(), f.js, f.names); err != nil || st.Paused {
		t.Fatalf("after resume: %+v, %v", st, err)
	}
	for _, tc := range []struct {
		body map[string]any
		want int
	}{
		{map[string]any{"op": "explode"}, http.StatusBadRequest},
		{map[string]any{"op": "open", "for": "48h"}, http.StatusBadRequest},
		{map[string]any{"op": "close", "process": "a/b/../../x\n"}, http.StatusBadRequest},
		{map[string]any{"op": "close", "reason": strings.Repeat("r", 5000)}, http.StatusBadRequest},
		{map[string]any{"op": "open", "for": "10m", "reason": "maintenance"}, http.StatusOK},
	} {
		if status := f.post("/api/breaker", tc.body, nil); status != tc.want {
			t.Errorf("breaker %v: %d, want %d", tc.body, status, tc.want)
		}
	}
	kv, err := f.js.KeyValue(t.Context(), fleet.ControlBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(t.Context(), fleet.ControlKey(f.names, ""))
	if err != nil || !strings.Contains(string(entry.Value()), `"op":"open"`) || !strings.Contains(string(entry.Value()), "tester@host") {
		t.Fatalf("control entry: %v", err)
	}
	if status := f.post("/api/pause", map[string]any{"for": "-5m"}, nil); status != http.StatusBadRequest {
		t.Errorf("negative pause: %d", status)
	}
}

// TestEvents: an open page gets the overview pushed, and Close ends the stream.
func TestEvents(t *testing.T) {
	f := newFixture(t, nil)
	f.writeRecords(2, "x %d")
	res, err := http.Get(f.srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	events := 0
	for sc.Scan() && events < 2 {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var o Overview
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatal(err)
		}
		if o.Status == nil || o.Status.DeadLetters != 2 || len(o.NodeTypes) != 1 || o.NodeTypes[0].DeadLetters != 2 {
			t.Fatalf("overview %+v", o)
		}
		events++
	}
	if events != 2 {
		t.Fatalf("%d events: %v", events, sc.Err())
	}
	f.con.Close()
	for sc.Scan() {
	}
	// The stream ended: Scan returned.
}

// TestPinnedSelection: a purge or a replay confirmed for the records an
// operator was shown reaches none stored since, even when as many of
// those were replayed meanwhile (the count alone would not tell).
func TestPinnedSelection(t *testing.T) {
	f := newFixture(t, nil)
	f.writeRecords(2, "upstream %d down")
	group := "?group=" + dlq.Entry{Record: &dlq.Record{Reason: dlq.ReasonExhausted, NodeType: "resize", ErrorKind: "Transport", Error: "upstream 0 down"}}.GroupKey().ID()
	var shown recordsAnswer
	status, body := f.do("GET", "/api/records"+group+"&limit=1", "", nil)
	if err := json.Unmarshal([]byte(body), &shown); status != http.StatusOK || err != nil || shown.Matched != 2 || shown.Pinned.Through != 2 {
		t.Fatalf("count: %d %s", status, body)
	}
	var preview previewAnswer
	if status := f.post("/api/replay", map[string]any{"filter": map[string]any{"group": shown.Pinned.Group}, "dry_run": true}, &preview); status != http.StatusOK || preview.Pinned.Through != 2 {
		t.Fatalf("dry run: %d %+v", status, preview)
	}
	// Meanwhile one is replayed elsewhere, and two more of the group fail.
	if err := f.store.Delete(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	f.writeRecords(2, "upstream %d down")
	var job JobState
	if status := f.post("/api/replay", map[string]any{"filter": preview.Pinned, "limit": preview.Summary.Replayed}, &job); status != http.StatusAccepted {
		t.Fatalf("replay: %d", status)
	}
	f.con.jobs.wait()
	if snap := f.con.jobs.get(job.ID).snapshot(); snap.Summary.Replayed != 1 || f.count() != 2 {
		t.Fatalf("replay of the pinned selection: %+v, %d records left (want the 2 stored since)", snap.Summary, f.count())
	}
	var purged map[string]int
	if status := f.post("/api/purge", map[string]any{"filter": shown.Pinned, "confirm": true, "expect": shown.Matched}, &purged); status != http.StatusOK || purged["purged"] != 0 || f.count() != 2 {
		t.Fatalf("purge of the pinned selection: %d %v, %d records left (want the 2 stored since)", status, purged, f.count())
	}
}

// TestPreviewBoundsForgedRecords: records written by hand on the
// dead-letter subjects, with a megabyte in their error, task ID, node type
// or original subject, give a dry run's answer of a few kilobytes: the
// preview lists records as a page does, and quotes record fields cut.
func TestPreviewBoundsForgedRecords(t *testing.T) {
	f := newFixture(t, nil)
	huge := strings.Repeat("\x1b", 900<<10)
	good := func() *dlq.Record {
		data, _ := json.Marshal(map[string]any{"id": "forged", "node_type": "resize"})
		return &dlq.Record{Version: 1, Reason: dlq.ReasonPermanent, TaskID: "forged", NodeType: "resize", ErrorKind: "Execution",
			Error: "forged", Subject: "tasks.resize", Stream: "NODEQ_TASKS", Data: data}
	}
	var forged []*dlq.Record
	for _, set := range []func(*dlq.Record){
		func(r *dlq.Record) { r.Error = huge },    // replayable: listed
		func(r *dlq.Record) { r.TaskID = huge },   // replayable: listed
		func(r *dlq.Record) { r.NodeType = huge }, // refused: quoted
		func(r *dlq.Record) { r.Subject = huge },  // refused: quoted
	} {
		r := good()
		set(r)
		forged = append(forged, r)
	}
	for _, r := range forged {
		b, err := dlq.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.js.Publish(t.Context(), f.names.DLQPrefix+".resize", b); err != nil {
			t.Fatal(err)
		}
	}
	status, body := f.do("POST", "/api/replay", `{"filter":{},"dry_run":true}`, nil)
	if status != http.StatusOK {
		t.Fatalf("dry run: %d %s", status, body)
	}
	var ans previewAnswer
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if len(ans.Records) != 2 || ans.Summary.Refused != 2 {
		t.Fatalf("dry run: %d records, %d refused; want 2 and 2", len(ans.Records), ans.Summary.Refused)
	}
	if len(body) > 64<<10 {
		t.Errorf("dry run of 4 forged records answers %d bytes; want a few kilobytes", len(body))
	}
}
