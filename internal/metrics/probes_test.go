package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadyz(t *testing.T) {
	p := &Probes{}
	check := func(want int) {
		t.Helper()
		rec := httptest.NewRecorder()
		p.readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != want {
			t.Fatalf("readyz %d, want %d", rec.Code, want)
		}
	}
	check(503) // still starting
	connected := true
	p.SetReady(func() bool { return connected })
	check(200)
	connected = false // NATS connection lost
	check(503)
	p.SetReady(nil) // shutting down
	check(503)
}

// With no address nothing listens, and the nil Probes is usable.
func TestProbesOff(t *testing.T) {
	p, err := ServeProbes("", slog.New(slog.DiscardHandler))
	if err != nil || p != nil {
		t.Fatalf("ServeProbes(\"\") = %v, %v; want nil, nil", p, err)
	}
	p.SetReady(func() bool { return true })
	p.Series().Task("echo", Succeeded)
	p.Stop()
}

// A listener serves the nodeq series on /metrics, /healthz, and /readyz
// once ready; a bad address is an error.
func TestProbesServe(t *testing.T) {
	p, err := ServeProbes("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	p.Series().Task("echo", Succeeded)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + p.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `nodeq_tasks_total{node_type="echo",outcome="succeeded"} 1`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz before ready: %d", code)
	}
	p.SetReady(func() bool { return true })
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz when ready: %d", code)
	}
	if _, err := ServeProbes("127.0.0.1:bad", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "metrics listener") {
		t.Fatalf("a bad address: %v", err)
	}
}
