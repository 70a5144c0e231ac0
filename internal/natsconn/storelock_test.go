package natsconn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A second embedded server on a store directory in use is refused with a
// message naming the holder and what to do; once the first has shut down,
// a new one starts on it.
func TestEmbeddedStoreDirLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nodeq-data")
	first, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			first.Shutdown()
			first.WaitForShutdown()
		}
	})

	_, err = StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	var inUse *StoreInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second server on %s: %v, want a StoreInUseError", dir, err)
	}
	url := first.ClientURL()
	for _, want := range []string{
		fmt.Sprintf("store directory %s is in use by another nodeq consumer (pid %d, %s, since ", dir, os.Getpid(), url),
		fmt.Sprintf("): connect to it with --nats-url %s (NODEQ_NATS_URL), or give this consumer its own --data-dir", url),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q\ndoes not contain %q", err, want)
		}
	}
	if inUse.Holder.Since.IsZero() || time.Since(inUse.Holder.Since) > time.Minute {
		t.Fatalf("holder since %v", inUse.Holder.Since)
	}
	// The refused server changed nothing: the first still serves.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("first server after the refusal: %v", err)
	}
	nc.Close()

	first.Shutdown()
	first.WaitForShutdown()
	stopped = true
	again, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("new server after the first shut down: %v", err)
	}
	t.Cleanup(func() { again.Shutdown(); again.WaitForShutdown() })
	b, err := os.ReadFile(filepath.Join(dir, StoreLockFile))
	if err != nil {
		t.Fatal(err)
	}
	if h := parseHolder(b); h.PID != os.Getpid() || h.URL != again.ClientURL() {
		t.Fatalf("lock file %q, want pid %d and %s", b, os.Getpid(), again.ClientURL())
	}
}

// The OS lock is what counts: a lock file left by a process that died
// blocks nobody, and a lock held through another open file (as another
// process would hold it) refuses a server even if the file says nothing.
func TestEmbeddedStoreLockIsTheOSLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StoreLockFile)
	stale := `{"pid":999999,"url":"nats://127.0.0.1:1","host":"gone","since":"2020-01-02T03:04:05Z"}` + "\n"
	if err := os.WriteFile(path, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("a stale lock file blocked the server: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	// The registry releases just after the shutdown completes.
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(path); len(b) != 0; b, _ = os.ReadFile(path) {
		if time.Now().After(deadline) {
			t.Fatalf("lock file still holds %q after shutdown", b)
		}
		time.Sleep(10 * time.Millisecond)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tryLock(f); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("\x1b]0;owned\x07 not json"), 0); err != nil {
		t.Fatal(err)
	}
	_, err = StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	var inUse *StoreInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("server on a directory locked elsewhere: %v, want a StoreInUseError", err)
	}
	if want := "(holder not recorded in nodeq.lock): stop that consumer, or give this consumer its own --data-dir"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if err := unlock(f); err != nil {
		t.Fatal(err)
	}
	s, err = StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("after the other holder unlocked: %v", err)
	}
	// ShutdownEmbedded releases before it returns.
	ShutdownEmbedded(s)
	if b, err := os.ReadFile(path); err != nil || len(b) != 0 {
		t.Fatalf("lock file after ShutdownEmbedded: %q, %v", b, err)
	}
	if err := tryLock(f); err != nil {
		t.Fatalf("lock after ShutdownEmbedded: %v", err)
	}
}

// A lock file's content is untrusted: what reaches the message is bounded
// and free of controls.
func TestParseHolderUntrusted(t *testing.T) {
	long := strings.Repeat("a", 1500) // both fit the 4 KiB read
	cases := []struct {
		name, in string
		want     StoreHolder
	}{
		{"ours", `{"pid":42,"url":"nats://127.0.0.1:4222","host":"h","since":"2026-01-02T03:04:05Z"}`,
			StoreHolder{PID: 42, URL: "nats://127.0.0.1:4222", Host: "h", Since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{"escapes", "{\"pid\":7,\"url\":\"nats://x:1\\u001b[2J\\u202e\\u0085 rm -rf\",\"host\":\"\\u001b]0;t\\u0007h\"}",
			StoreHolder{PID: 7, URL: "nats://x:1[2J", Host: "]0;th"}},
		{"long", `{"pid":1,"url":"` + long + `","host":"` + long + `"}`, StoreHolder{PID: 1, URL: long[:256], Host: long[:64]}},
		{"negative pid, bad time", `{"pid":-5,"since":"yesterday"}`, StoreHolder{}},
		{"not json", "\x1b[31mhello", StoreHolder{}},
		{"empty", "", StoreHolder{}},
		{"too big", `{"pid":1,"url":"` + strings.Repeat("b", maxHolderBytes) + `"}`, StoreHolder{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := parseHolder([]byte(c.in))
			if got.PID != c.want.PID || got.URL != c.want.URL || got.Host != c.want.Host || !got.Since.Equal(c.want.Since) {
				t.Fatalf("parseHolder(%.80q) = %+v, want %+v", c.in, got, c.want)
			}
			msg := (&StoreInUseError{Dir: "d", Holder: got}).Error()
			if strings.ContainsFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\u202e' || r == '\u0085' }) || len(msg) > 800 {
				t.Fatalf("message not safe to print: %q", msg)
			}
		})
	}
}
