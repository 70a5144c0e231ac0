package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// consumerBinary builds cmd/consumer once per test run.
func consumerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nodeq-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "consumer")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/consumer").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// results collects task results published to results.<task id>.
type results struct {
	mu   sync.Mutex
	runs map[string]int
}

func (e *env) collectResults() *results {
	r := &results{runs: map[string]int{}}
	sub, err := e.nc.Subscribe("results.>", func(m *nats.Msg) {
		res, err := task.DecodeResult(m.Data, m.Header.Get("Content-Type"))
		if err != nil || !res.OK {
			return
		}
		r.mu.Lock()
		r.runs[res.TaskID]++
		r.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *results) count() (distinct, total int, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.runs {
		distinct++
		total += n
		if n > 1 {
			dups += n - 1
		}
	}
	return
}

// publishSleeps publishes n sleep tasks asking for results.
func (e *env) publishSleeps(prefix string, n int, d string) []string {
	e.t.Helper()
	ids := make([]string, n)
	tasks := func(yield func(*task.Envelope) bool) {
		for i := range n {
			ids[i] = fmt.Sprintf("%s-%d", prefix, i)
			if !yield(&task.Envelope{ID: ids[i], NodeType: "sleep", ReplyTo: "results." + ids[i], Params: task.Params{"duration": d}}) {
				return
			}
		}
	}
	failed := 0
	if err := queue.NewPublisher(e.js, e.names).PublishAll(context.Background(), tasks, 512, func(o queue.Outcome) {
		if o.Err != nil {
			failed++
		}
	}); err != nil || failed > 0 {
		e.t.Fatalf("publish: %v, %d failed", err, failed)
	}
	return ids
}

// startProcess runs the consumer binary against the env's server.
func (e *env) startProcess(t *testing.T, cfgYAML string, logName string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "nodeq.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(consumerBinary(t), "--config", cfgFile, "--nats-url", e.srv.ClientURL(), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("%s:\n%s", logName, b)
		}
	})
	return cmd
}

const processConfig = `
consumer:
  workers: 8
  ack_wait: 2s
  shutdown_timeout: 10s
nodes:
  sleep: {max_duration: 10s}
`

// TestKilledProcessLosesNothing: three consumer processes share 10,000
// tasks; one is killed with SIGKILL mid-run. Every task completes.
func TestKilledProcessLosesNothing(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	const n = 10000
	ids := e.publishSleeps("k", n, "2ms")
	var procs []*exec.Cmd
	for i := range 3 {
		procs = append(procs, e.startProcess(t, processConfig, fmt.Sprintf("consumer-%d.log", i)))
	}
	eventually(t, 60*time.Second, "a third of the tasks", func() bool { d, _, _ := res.count(); return d >= n/3 })
	if err := procs[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = procs[0].Wait()
	eventually(t, 120*time.Second, "every task", func() bool {
		d, _, _ := res.count()
		return d == n && e.streamMsgs(e.names.TaskStream) == 0
	})
	distinct, total, dups := res.count()
	lost := 0
	for _, id := range ids {
		res.mu.Lock()
		if res.runs[id] == 0 {
			lost++
		}
		res.mu.Unlock()
	}
	t.Logf("published %d, succeeded %d, dead-lettered %d, duplicates %d, lost %d", n, distinct, e.streamMsgs(e.names.DLQStream), dups, lost)
	if lost != 0 || total-distinct != dups {
		t.Fatalf("lost %d", lost)
	}
	if dups > 8 { // at most the killed process's in-flight tasks run twice
		t.Fatalf("%d duplicates: more than the 8 tasks the killed process had in flight", dups)
	}
}

// TestSIGTERMFinishesInFlight: SIGTERM under load stops pulling, finishes
// and acks in-flight tasks, and exits 0 in time; nothing is redelivered.
func TestSIGTERMFinishesInFlight(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	e.publishSleeps("s", 200, "300ms")
	cmd := e.startProcess(t, processConfig, "consumer.log")
	eventually(t, 20*time.Second, "tasks to run", func() bool { d, _, _ := res.count(); return d >= 8 })
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	took := time.Since(start)
	ci, err := e.cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done, _, dups := res.count()
	t.Logf("exited %v after SIGTERM; %d tasks done, %d in flight, %d redelivered", took.Round(time.Millisecond), done, ci.NumAckPending, ci.NumRedelivered)
	if took > 10*time.Second || ci.NumAckPending != 0 || ci.NumRedelivered != 0 || dups != 0 {
		t.Fatalf("exit took %v; %d left in flight, %d redelivered, %d duplicates", took, ci.NumAckPending, ci.NumRedelivered, dups)
	}
	if left := e.streamMsgs(e.names.TaskStream); int(left)+done != 200 {
		t.Fatalf("%d done + %d queued != 200", done, left)
	}
}

// TestServerRestartLosesNothing: the nats-server stops and starts again on
// the same address and store mid-run; consumers reconnect and finish.
func TestServerRestartLosesNothing(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.ServerIn(t, dir)
	u, _ := url.Parse(srv.ClientURL())
	addr := u.Host
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e := envOn(t, srv, nc, queue.ConsumerOptions{AckWait: 2 * time.Second})
	res := e.collectResults()
	const n = 3000
	ids := e.publishSleeps("r", n, "1ms")
	e.start(sleepRegistry(), runnerOpts{workers: 8, ackWait: 2 * time.Second})
	eventually(t, 60*time.Second, "a third of the tasks", func() bool { d, _, _ := res.count(); return d >= n/3 })
	srv.Shutdown()
	srv.WaitForShutdown()
	time.Sleep(300 * time.Millisecond)
	srv2 := natstest.ServerAt(t, dir, addr)
	e.srv = srv2
	eventually(t, 90*time.Second, "every task after the restart", func() bool {
		d, _, _ := res.count()
		return d == n && e.streamMsgs(e.names.TaskStream) == 0
	})
	distinct, _, dups := res.count()
	lost := 0
	for _, id := range ids {
		res.mu.Lock()
		if res.runs[id] == 0 {
			lost++
		}
		res.mu.Unlock()
	}
	t.Logf("published %d, succeeded %d, dead-lettered %d, duplicates %d, lost %d", n, distinct, e.streamMsgs(e.names.DLQStream), dups, lost)
	if lost != 0 {
		t.Fatalf("lost %d", lost)
	}
}
