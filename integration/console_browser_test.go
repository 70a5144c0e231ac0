package integration

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nodeq/nodeq/internal/console"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// browser starts headless Chromium for a test. Without it the test is
// skipped, except in CI (CI set), where .ci/run installs it: there it fails.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no chromium on the PATH: .ci/run installs Debian's chromium package")
		}
		t.Skip("no chromium on the PATH (apt-get install -y chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// waitText polls the text of the first element sel matches until it
// satisfies ok, failing the test with the last text seen.
func waitText(t *testing.T, ctx context.Context, sel, what string, ok func(string) bool) string {
	t.Helper()
	var text string
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)))
		if err == nil {
			text, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		}
		if err == nil && ok(text) {
			return text
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: %s reads %q (%v)", what, sel, text, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConsoleInBrowser drives the console in headless Chromium as an
// operator would after a downstream outage: the overview shows the dead
// letters, the failures page one group for them (their messages differ
// only in numbers and addresses), the record page the masked credentials
// and the payload, and the group's replay, previewed first, empties the
// dead-letter queue: every task then runs and succeeds.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	e := newEnv(t, queue.StreamOptions{})
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	succeeded := map[string]int{}
	reg := executor.NewRegistry()
	if err := reg.Register(executor.Node{Type: "thumbs", Executor: executor.Func(func(_ context.Context, env *task.Envelope) ([]byte, error) {
		if broken.Load() {
			return nil, resilience.Errorf(resilience.Manifest, "upstream 10.0.0.%d:443 rejected task %s (code %d)", len(env.ID), env.ID, 400+len(env.ID))
		}
		mu.Lock()
		succeeded[env.ID]++
		mu.Unlock()
		return env.Payload, nil
	})}); err != nil {
		t.Fatal(err)
	}
	e.start(reg, runnerOpts{})

	// An outage: every task fails for good and is dead-lettered.
	const n = 3
	for i := range n {
		msg, err := queue.NewPublisher(e.js, e.names).Message(&task.Envelope{ID: fmt.Sprintf("thumb-7hX2kq%d", 10*i+i), NodeType: "thumbs",
			Payload: []byte(fmt.Sprintf(`{"image":"cat-%d.png","size":128}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		msg.Header.Set("Authorization", "Bearer s3cret-token")
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	store := dlq.NewStore(e.js, e.names.DLQStream, e.names.DLQPrefix)
	eventually(t, 10*time.Second, "3 dead letters", func() bool {
		c, err := store.Count(context.Background(), &dlq.Filter{})
		return err == nil && c == n
	})

	con, err := console.New(console.Options{JS: e.js, Names: e.names, Log: testLogger(t), Refresh: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con.Handler())
	t.Cleanup(func() { con.Close(); srv.Close() })

	// Overview: the dead letters, live.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#stat-deadletters", "overview", func(s string) bool { return s == "3" })
	waitText(t, ctx, "#node-types", "node types", func(s string) bool { return strings.Contains(s, "thumbs") })

	// Failures: one group of three.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#nav-failures"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#groups-summary", "failures", func(s string) bool { return s == "3 records in 1 group" })
	waitText(t, ctx, "tr.group-row", "the group row", func(s string) bool {
		return strings.Contains(s, "upstream <addr> rejected task <id> (code <n>)") && strings.Contains(s, "permanent_error")
	})
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("tr.group-row"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#group-count", "the group", func(s string) bool { return strings.HasPrefix(s, "3 records") })

	// A record: its credentials masked, its payload readable.
	waitText(t, ctx, ".record-table a", "the group's records", func(s string) bool { return s != "" })
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".record-table a"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#headers", "record headers", func(s string) bool {
		return strings.Contains(s, "Authorization") && strings.Contains(s, "[masked]") && !strings.Contains(s, "s3cret")
	})
	waitText(t, ctx, "#payload", "record payload", func(s string) bool { return strings.Contains(s, `"image": "cat-`) })
	waitText(t, ctx, "#causes, #record-title", "record title", func(s string) bool { return s != "" })
	if err := chromedp.Do(ctx, chromedp.NavigateBack()); err != nil {
		t.Fatal(err)
	}

	// The downstream is back: preview the group's replay, then run it.
	broken.Store(false)
	waitText(t, ctx, "#group-count", "the group again", func(s string) bool { return strings.HasPrefix(s, "3 records") })
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".replay-preview"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, ".preview-summary", "the dry run", func(s string) bool { return strings.Contains(s, "would replay 3, skip 0, refuse 0") })
	if c, _ := store.Count(context.Background(), &dlq.Filter{}); c != n {
		t.Fatalf("the preview changed the queue: %d records", c)
	}
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(".replay-rate"), "50"), chromedp.Click(chromedp.CSS(".replay-run"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, ".job-status", "the replay", func(s string) bool { return strings.HasPrefix(s, "Replay done: replayed 3,") })

	// The queue shrank and every task ran: published = succeeded + dead-lettered.
	eventually(t, 10*time.Second, "every replayed task to succeed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(succeeded) == n
	})
	left, err := store.Count(context.Background(), &dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	ok := len(succeeded)
	mu.Unlock()
	t.Logf("published %d = succeeded %d + dead-lettered %d, %d lost", n, ok, left, n-ok-left)
	if ok+left != n || left != 0 {
		t.Fatalf("published %d, succeeded %d, dead-lettered %d", n, ok, left)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#nav-overview"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#stat-deadletters", "overview after the replay", func(s string) bool { return s == "0" })

	// A hostile record is shown as text: its markup never becomes markup.
	hostile := `<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`
	r := &dlq.Record{Reason: dlq.ReasonPermanent, NodeType: "thumbs", ErrorKind: "Manifest", Error: hostile, TaskID: hostile,
		Subject: "tasks.thumbs", Stream: e.names.TaskStream, Sequence: 999, Data: []byte(hostile)}
	if _, err := dlq.NewWriter(e.js, e.names.DLQPrefix).Write(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#nav-failures"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "tr.group-row", "the hostile group", func(s string) bool { return strings.Contains(s, "<img src=x") })
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("tr.group-row"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, ".record-table", "the hostile record", func(s string) bool { return strings.Contains(s, "<script>") })
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".record-table a"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "#payload", "the hostile payload", func(s string) bool { return strings.Contains(s, "<img") })
	injected, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main script").length + (document.title === "pwned" ? 100 : 0)`))
	if err != nil || injected != 0 {
		t.Fatalf("hostile markup became markup: %d, %v", injected, err)
	}
}
