package executor

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

func httpExec(t *testing.T, url string, mod ...func(*HTTPConfig)) Executor {
	t.Helper()
	cfg := HTTPConfig{URL: url, Headers: map[string]string{"Authorization": "Bearer s3cret"}}
	for _, m := range mod {
		m(&cfg)
	}
	ex, err := HTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestHTTPSuccess(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			r.Header.Get("Idempotency-Key") != "t-1" || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "bad request shape", http.StatusBadRequest)
			return
		}
		w.Write(append([]byte("got "), body...))
	}))
	defer srv.Close()
	out, err := httpExec(t, srv.URL).Execute(context.Background(), &task.Envelope{ID: "t-1", NodeType: "h", Payload: []byte(`{"a":1}`), PayloadEncoding: task.PayloadJSON})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `got {"a":1}` {
		t.Fatalf("output %q", out)
	}
}

func TestHTTPClassification(t *testing.T) {
	cases := []struct {
		status int
		kind   resilience.Kind
	}{
		{500, resilience.Transport}, {503, resilience.Transport}, {429, resilience.Transport},
		{400, resilience.Manifest}, {404, resilience.Manifest}, {422, resilience.Manifest},
		{302, resilience.Other},
	}
	for _, c := range cases {
		t.Run(http.StatusText(c.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if c.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(c.status)
				w.Write([]byte("downstream says no"))
			}))
			defer srv.Close()
			_, err := httpExec(t, srv.URL).Execute(context.Background(), &task.Envelope{ID: "x", NodeType: "h"})
			if k := resilience.KindOf(err); k != c.kind {
				t.Fatalf("kind %v, want %v (%v)", k, c.kind, err)
			}
			if !strings.Contains(err.Error(), strings.TrimSpace(http.StatusText(c.status))) {
				t.Fatalf("error %q does not name the status", err)
			}
		})
	}
}

func TestHTTPTimeoutAndRefused(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := httpExec(t, slow.URL).Execute(ctx, &task.Envelope{ID: "x", NodeType: "h"})
	if resilience.KindOf(err) != resilience.Transport || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("timeout: %v", err)
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err = httpExec(t, "http://user:pw@"+addr+"/x?token=abc").Execute(context.Background(), &task.Envelope{ID: "x", NodeType: "h"})
	if resilience.KindOf(err) != resilience.Transport || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("refused: %v", err)
	}
	if strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "abc") {
		t.Fatalf("error leaks credentials: %v", err)
	}
}

func TestHTTPResponseCap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 2000))
	}))
	defer srv.Close()
	_, err := httpExec(t, srv.URL, func(c *HTTPConfig) { c.MaxResponse = 1000 }).Execute(context.Background(), &task.Envelope{ID: "x", NodeType: "h"})
	if resilience.KindOf(err) != resilience.Serialization {
		t.Fatalf("got %v", err)
	}
}

func TestHTTPConfigErrors(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "/relative", "http://"} {
		if _, err := HTTP(HTTPConfig{URL: u}); err == nil {
			t.Errorf("url %q accepted", u)
		}
	}
}

// A bad url is reported without the credentials it may carry.
func TestHTTPURLErrorHidesCredentials(t *testing.T) {
	for _, u := range []string{"ftp://svc:s3cret@host/x", "http://svc:s3cret@[::1/x", "svc:s3cret@host:80/x?token=s3cret"} {
		_, err := HTTP(HTTPConfig{URL: u})
		if err == nil {
			t.Fatalf("%q accepted", u)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the secret: %v", err)
		}
	}
}
