package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer a command writes while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startUI runs producer ui with args on a free loopback port until the
// test ends, and returns its base URL.
func startUI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, append(args, "--listen", "127.0.0.1:0"), strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-exited; code != exitOK {
			t.Errorf("producer ui exited %d: %s", code, errOut.String())
		}
		if !strings.Contains(out.String(), "console stopped") {
			t.Errorf("stdout %q", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, rest, ok := strings.Cut(out.String(), "nodeq console on "); ok {
			return strings.TrimSuffix(strings.Fields(rest)[0], "/")
		}
		select {
		case code := <-exited:
			exited <- code
			t.Fatalf("producer ui exited %d before serving: %s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("producer ui did not start: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkUIExample runs a ui example until it serves the console page.
func checkUIExample(t *testing.T, args ...string) {
	base := startUI(t, args...)
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "<title>nodeq console</title>") {
		t.Fatalf("GET /: %d %q", res.StatusCode, body)
	}
}

// TestUIOptions: what producer ui refuses before it connects (exit 2).
func TestUIOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"beyond loopback without a token", []string{"--listen", ":8089"}, "set a token"},
		{"every interface without a token", []string{"--listen", "0.0.0.0:8089"}, "set a token"},
		{"a short token", []string{"--token", "short"}, "at least 16"},
		{"a certificate without its key", []string{"--tls-cert", "c.pem"}, "go together"},
		{"no port", []string{"--listen", "127.0.0.1"}, "want host:port"},
		{"a bad port", []string{"--listen", "127.0.0.1:http2x"}, "bad port"},
		{"a host with a port", []string{"--host", "ops:8089"}, "without port"},
		{"a refresh too fast", []string{"--refresh", "1ms"}, "200ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runProducer(t, "", append([]string{"ui", "--nats-url", "nats://127.0.0.1:1"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, exitUsage, tc.want)
			}
		})
	}
}

// TestUITokenBeyondLoopback: with a token, the console listens beyond
// loopback and refuses requests without it.
func TestUITokenBeyondLoopback(t *testing.T) {
	url := startConsumer(t)
	token := strings.Repeat("k", 24)
	var out, errOut lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"ui", "--nats-url", url, "--listen", "0.0.0.0:0", "--token", token}, strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	}()
	defer func() { cancel(); <-exited }()
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; {
		if _, rest, ok := strings.Cut(out.String(), "nodeq console on "); ok {
			base = strings.Replace(strings.TrimSuffix(strings.Fields(rest)[0], "/"), "[::]", "127.0.0.1", 1)
			base = strings.Replace(base, "0.0.0.0", "127.0.0.1", 1)
		} else if time.Now().After(deadline) {
			t.Fatalf("did not start: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(errOut.String(), "without TLS") {
		t.Errorf("no warning about plain HTTP: %q", errOut.String())
	}
	get := func(auth string) int {
		req, _ := http.NewRequest("GET", base+"/api/overview", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := get(""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	if code := get(token + "x"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d", code)
	}
	if code := get(token); code != http.StatusOK {
		t.Errorf("with the token: %d", code)
	}
	if strings.Contains(out.String()+errOut.String(), token) {
		t.Error("the token was printed")
	}
}
