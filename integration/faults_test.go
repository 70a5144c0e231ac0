package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// binaries are the nodeq commands the process tests run, built once per
// test run into one temporary directory (TestMain removes it).
var binaries struct {
	once sync.Once
	dir  string
	err  error
	mu   sync.Mutex
	done map[string]error
}

// binPath is the directory's consumer binary, for TestMain's cleanup.
var binPath string

// buildCommand builds ../cmd/<name> once and returns its path.
func buildCommand(t *testing.T, name string) string {
	t.Helper()
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "nodeq-bin-")
		binaries.done = map[string]error{}
		binPath = filepath.Join(binaries.dir, "consumer")
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	path := filepath.Join(binaries.dir, name)
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	err, built := binaries.done[name]
	if !built {
		if out, berr := exec.Command("go", "build", "-o", path, "../cmd/"+name).CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build: %v\n%s", berr, out)
		}
		binaries.done[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// consumerBinary builds cmd/consumer once per test run.
func consumerBinary(t *testing.T) string { return buildCommand(t, "consumer") }

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

// account prints the accounting line of a fault test and returns the lost
// and duplicated counts: a task is lost when it neither succeeded, nor was
// dead-lettered, nor still waits in the task stream.
func (r *results) account(t *testing.T, e *env, ids []string) (lost, dups int) {
	t.Helper()
	dead := map[string]bool{}
	for _, d := range e.records() {
		dead[d.rec.TaskID] = true
	}
	queued := int(e.streamMsgs(e.names.TaskStream))
	r.mu.Lock()
	succeeded := 0
	for _, id := range ids {
		switch n := r.runs[id]; {
		case n > 0:
			succeeded++
			dups += n - 1
		case !dead[id]:
			lost++
		}
	}
	r.mu.Unlock()
	lost = max(lost-queued, 0) // tasks still queued are not lost
	t.Logf("published %d, succeeded %d, dead-lettered %d, duplicates %d, lost %d", len(ids), succeeded, len(dead), dups, lost)
	return lost, dups
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
  reply_subjects: ["_INBOX.>", "results.>"]
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
	lost, dups := res.account(t, e, ids)
	if lost != 0 {
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
	ids := e.publishSleeps("s", 200, "300ms")
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
	// Tasks that arrived after the signal were handed back (nak) unrun. The
	// server counts a nak'd task as pending until it is delivered again,
	// which it does at once: fetch them well within ack_wait (2s), after
	// which an unsettled task would come back too.
	handedBack := 0
	if n := ci.NumAckPending; n > 0 {
		b, err := e.cons.Fetch(n, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			handedBack++
			_ = m.Nak()
		}
		if handedBack != n {
			t.Fatalf("%d tasks left in flight, only %d of them handed back", n, handedBack)
		}
	}
	done, _, dups := res.count()
	t.Logf("exited %v after SIGTERM; %d tasks done, %d handed back unrun, %d redelivered", took.Round(time.Millisecond), done, handedBack, ci.NumRedelivered)
	if took > 10*time.Second || ci.NumRedelivered != 0 || dups != 0 {
		t.Fatalf("exit took %v; %d redelivered, %d duplicates", took, ci.NumRedelivered, dups)
	}
	if left := e.streamMsgs(e.names.TaskStream); int(left)+done != 200 {
		t.Fatalf("%d done + %d queued != 200", done, left)
	}
	if lost, _ := res.account(t, e, ids); lost != 0 {
		t.Fatalf("lost %d", lost)
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
	lost, _ := res.account(t, e, ids)
	if lost != 0 {
		t.Fatalf("lost %d", lost)
	}
}

// downstream is an http service whose requests the test counts.
type downstream struct {
	failing atomic.Bool
	mu      sync.Mutex
	times   []time.Time
}

func (d *downstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.times = append(d.times, time.Now())
	d.mu.Unlock()
	if d.failing.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok"))
}

func (d *downstream) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.times)
}

func (d *downstream) requests(from, to time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, t := range d.times {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

func fleetConfig(url string) string {
	return `
consumer:
  workers: 2
  ack_wait: 5s
  reply_subjects: ["_INBOX.>", "results.>"]
retry:
  policy: none
redelivery:
  max_deliveries: 100
  backoff: [200ms]
breaker:
  scope: fleet
  failure_threshold: 3
  cooldown: 4s
nodes:
  call:
    executor: http
    url: ` + url + `
    timeout: 2s
`
}

// TestFleetBreakerProcesses: two consumer processes with breaker.scope
// fleet; only one's downstream fails. Both stop pulling, exactly one probe
// runs after the cooldown, and both resume when it succeeds.
func TestFleetBreakerProcesses(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	var dA, dB downstream
	dA.failing.Store(true)
	sA, sB := httptest.NewServer(&dA), httptest.NewServer(&dB)
	defer sA.Close()
	defer sB.Close()

	// Record the shared breaker's transitions with the server's timestamps.
	kv, err := e.js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: fleet.BreakerBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(context.Background(), e.names.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var tmu sync.Mutex
	changes := map[string][]time.Time{}
	go func() {
		for entry := range w.Updates() {
			if entry == nil {
				continue
			}
			var st struct{ State string }
			if json.Unmarshal(entry.Value(), &st) == nil {
				tmu.Lock()
				changes[st.State] = append(changes[st.State], entry.Created())
				tmu.Unlock()
			}
		}
	}()
	seen := func(state string) []time.Time {
		tmu.Lock()
		defer tmu.Unlock()
		return append([]time.Time(nil), changes[state]...)
	}

	// Both must be pulling before the first task: a consumer that starts
	// first can otherwise take (and prefetch) every task, leaving the
	// failing one too few to trip.
	bin := consumerBinary(t)
	pA := startConsumerAt(t, bin, e.srv.ClientURL(), fleetConfig(sA.URL), "consumer-a.log")
	pB := startConsumerAt(t, bin, e.srv.ClientURL(), fleetConfig(sB.URL), "consumer-b.log")
	pA.waitReady(t, 30*time.Second)
	pB.waitReady(t, 30*time.Second)
	// Publish until the breaker opens: which process gets a task is the
	// server's choice, so the failing one's third failure may need more.
	var ids []string
	deadline := time.Now().Add(30 * time.Second)
	for len(seen("open")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the fleet breaker did not open after %d tasks", len(ids))
		}
		id := fmt.Sprintf("fb-%d", len(ids))
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "call", Payload: []byte("{}"), ReplyTo: "results." + id})
		if len(ids) >= 40 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("the fleet breaker opened after %d tasks", len(ids))
	time.Sleep(pullWait*5 + 200*time.Millisecond) // the consumers' pull wait is 1s
	before := dA.count() + dB.count()
	more := make([]string, 40) // published while open: they must wait
	for i := range more {
		more[i] = fmt.Sprintf("fb-more-%d", i)
		e.publish(&task.Envelope{ID: more[i], NodeType: "call", Payload: []byte("{}"), ReplyTo: "results." + more[i]})
	}
	ids = append(ids, more...)
	time.Sleep(500 * time.Millisecond)
	if st, err := fleet.GetStatus(context.Background(), e.js, e.names); err != nil || !st.Paused || st.Pending < 40 {
		t.Fatalf("consumer not paused with the new tasks pending: %+v %v", st, err)
	}
	if after := dA.count() + dB.count(); after != before {
		t.Fatalf("%d requests while the fleet breaker was open", after-before)
	}

	dA.failing.Store(false)
	eventually(t, 60*time.Second, "every task after recovery", func() bool { d, _, _ := res.count(); return d == len(ids) })
	half, closed := seen("half-open"), seen("closed")
	if len(half) == 0 || len(closed) == 0 {
		t.Fatalf("transitions: %v", changes)
	}
	probeFrom, probeTo := half[len(half)-1], closed[len(closed)-1]
	probes := dA.requests(probeFrom, probeTo) + dB.requests(probeFrom, probeTo)
	t.Logf("probes in the last half-open window %d; trips %d", probes, len(seen("open")))
	if lost, _ := res.account(t, e, ids); lost != 0 {
		t.Fatalf("lost %d", lost)
	}
	if probes != 1 {
		t.Fatalf("%d requests between the probe claim and the close, want exactly one probe", probes)
	}
	if st, err := fleet.GetStatus(context.Background(), e.js, e.names); err != nil || st.Breaker != "closed" || st.Paused {
		t.Fatalf("status after recovery: %+v %v", st, err)
	}
	far := time.Now().Add(time.Hour)
	if dA.requests(probeTo, far) == 0 || dB.requests(probeTo, far) == 0 {
		t.Fatalf("not both consumers resumed: %d and %d requests after the close", dA.requests(probeTo, far), dB.requests(probeTo, far))
	}
}
