package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// supervisor keeps the consumer binary running, as systemd or Kubernetes
// would: whenever the process exits, it starts it again.
type supervisor struct {
	t        *testing.T
	args     []string
	log      *os.File
	mu       sync.Mutex
	cmd      *osexec.Cmd
	stopping bool
	starts   atomic.Int64
	done     chan struct{}
}

func (e *env) supervise(t *testing.T, cfgYAML string) *supervisor {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "nodeq.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "consumer.log"))
	if err != nil {
		t.Fatal(err)
	}
	s := &supervisor{t: t, log: logFile, done: make(chan struct{}),
		args: []string{consumerBinary(t), "--config", cfgFile, "--nats-url", e.srv.ClientURL(), "--log-level", "warn"}}
	go s.run()
	t.Cleanup(func() {
		s.stop()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("consumer.log:\n%s", b)
		}
	})
	return s
}

func (s *supervisor) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		cmd := osexec.Command(s.args[0], s.args[1:]...)
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			s.mu.Unlock()
			s.t.Errorf("start consumer: %v", err)
			return
		}
		s.cmd = cmd
		s.starts.Add(1)
		s.mu.Unlock()
		_ = cmd.Wait()
	}
}

func (s *supervisor) stop() {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		if s.cmd != nil && s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Signal(os.Interrupt)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.mu.Lock()
		_ = s.cmd.Process.Kill()
		s.mu.Unlock()
		<-s.done
	}
}

// TestPoisonTaskIsDeadLettered: a node that kills the consumer process on
// every run is redelivered to the restarted process after each crash, and
// runs alone there; once poison_after solo runs ended without an outcome,
// its next delivery dead-letters it, unrun, with reason poison and its
// delivery count. Every other task runs, though those in flight next to it
// went down with the process too.
func TestPoisonTaskIsDeadLettered(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	sup := e.supervise(t, `
consumer:
  workers: 4
  ack_wait: 1s
  poison_after: 2
  reply_subjects: ["_INBOX.>", "results.>"]
nodes:
  sleep: {max_duration: 10s}
  crash:
    executor: process
    command: ["/bin/sh", "-c", "kill -KILL $PPID"]
    timeout: 10s
`)
	// Tasks of 300ms next to the crashing one: the first process has three
	// of them running when it goes down.
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("before-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "sleep", ReplyTo: "results." + id, Params: task.Params{"duration": "300ms"}})
	}
	e.publish(&task.Envelope{ID: "crash-1", NodeType: "crash", ReplyTo: "results.crash-1"})
	for i := range 40 {
		id := fmt.Sprintf("after-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "sleep", ReplyTo: "results." + id, Params: task.Params{"duration": "20ms"}})
	}
	var poison *dlq.Record
	eventually(t, 90*time.Second, "the crashing task in the dead-letter stream and every other task done", func() bool {
		if n, _, _ := res.count(); n < len(ids) {
			return false
		}
		for _, r := range e.records() {
			if r.rec.TaskID == "crash-1" {
				poison = r.rec
			}
		}
		return poison != nil
	})
	// Deliveries 1 and 2 ran among others and took the process down; 3 and
	// 4 ran alone and did again; delivery 5 dead-letters it.
	if poison.Reason != dlq.ReasonPoison || poison.Deliveries != 5 || poison.Attempts != 0 {
		t.Errorf("record: reason %q, deliveries %d, attempts %d; want poison, 5, 0 (%s)", poison.Reason, poison.Deliveries, poison.Attempts, poison.Error)
	}
	if !strings.Contains(poison.Error, "ran alone in a consumer process 2 times") || !strings.Contains(poison.Error, "4 of its 4 deliveries") ||
		!strings.Contains(poison.Error, "poison_after is 2") {
		t.Errorf("record error %q does not give the counts", poison.Error)
	}
	out, err := osexec.Command(producerBinary(t), "dlq", "list", "--reason", "poison", "--nats-url", e.srv.ClientURL()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "crash-1") || !strings.Contains(string(out), "poison") {
		t.Errorf("producer dlq list --reason poison (%v):\n%s", err, out)
	}
	t.Logf("producer dlq list --reason poison:\n%s", out)
	if n := sup.starts.Load(); n != 5 {
		t.Errorf("the consumer was started %d times; want 5 (four crashes, then the task was dead-lettered unrun)", n)
	}
	lost, dups := res.account(t, e, append(ids, "crash-1"))
	if lost != 0 || len(e.records()) != 1 {
		t.Fatalf("lost %d, %d records; want 0 lost and 1 record (duplicates %d)", lost, len(e.records()), dups)
	}
	if q := e.streamMsgs(e.names.TaskStream); q != 0 {
		t.Errorf("%d tasks left in the task stream", q)
	}
}

// countingHandler counts log records at or above a level.
type countingHandler struct {
	slog.Handler
	level slog.Level
	n     *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= h.level {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.level, h.n}
}

func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(g), h.level, h.n}
}

// TestFullDLQKeepsOutcome: while the dead-letter stream is full, a task
// that failed for good keeps its outcome: its node does not run again, only
// the store of its record is retried; the log says so once, not once per
// try; status names the condition; other tasks go on on the free workers.
// Once the stream has room, the records are stored and the tasks removed.
func TestFullDLQKeepsOutcome(t *testing.T) {
	const dlqBytes = 64 << 10
	e := newEnv(t, queue.StreamOptions{DLQMaxBytes: dlqBytes})
	ctx := context.Background()
	// Fill the dead-letter stream with an operator's filler until it refuses.
	fillers := 0
	for _, size := range []int{4 << 10, 512, 64, 1} {
		for {
			if _, err := e.js.Publish(ctx, e.names.DLQSubject("filler"), make([]byte, size)); err != nil {
				break
			}
			if fillers++; fillers > 1000 {
				t.Fatal("the dead-letter stream never filled up")
			}
		}
	}

	var runs atomic.Int64
	reg := brokenRegistry(&runs)
	var errorLines atomic.Int64
	log := slog.New(countingHandler{testLogger(t).Handler(), slog.LevelError, &errorLines})
	res := e.collectResults()
	r := e.startWith(reg, runnerOpts{workers: 8, retryDelay: 50 * time.Millisecond}, log) // up to 4 held
	const broken = 3
	var ids []string
	for i := range broken {
		id := fmt.Sprintf("broken-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "broken", ReplyTo: "results." + id})
	}
	eventually(t, 10*time.Second, "every broken task held by the consumer", func() bool {
		st, err := fleet.GetStatus(ctx, e.js, e.names)
		return err == nil && st.DLQRefusing.Tasks == broken
	})
	st, _ := fleet.GetStatus(ctx, e.js, e.names)
	if st.DLQRefusing.Processes != 1 || !strings.Contains(st.DLQRefusing.Error, "maximum bytes") || !st.DLQFull {
		t.Errorf("status: %+v, full %v; want 1 process, the refusal (maximum bytes exceeded), and full", st.DLQRefusing, st.DLQFull)
	}
	out, err := osexec.Command(producerBinary(t), "status", "--nats-url", e.srv.ClientURL()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "REFUSING: 3 failed task(s) held with their outcome by 1 consumer(s)") || !strings.Contains(string(out), "FULL") {
		t.Errorf("producer status (%v) does not name the condition:\n%s", err, out)
	}
	t.Logf("producer status:\n%s", out)
	// The other workers still run tasks that succeed.
	ids = append(ids, e.publishEchoes("echo", 20)...)
	eventually(t, 10*time.Second, "every echo task done while the broken ones are held", func() bool {
		n, _, _ := res.count()
		return n == 20
	})
	// Let the store be retried several times (50ms, 100ms, 200ms, ...).
	time.Sleep(1500 * time.Millisecond)
	if n := runs.Load(); n != broken {
		t.Errorf("the broken node ran %d times while the dead-letter stream was full; want %d (once per task)", n, broken)
	}
	if n := errorLines.Load(); n != 1 {
		t.Errorf("%d error lines while records were held; want 1", n)
	}

	// Make room: the operator purges the filler.
	s, err := e.js.Stream(ctx, e.names.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(e.names.DLQSubject("filler"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the held records stored", func() bool {
		return len(e.records()) == broken && e.streamMsgs(e.names.TaskStream) == 0
	})
	if n := runs.Load(); n != broken {
		t.Errorf("the broken node ran %d times in all; want %d", n, broken)
	}
	eventually(t, 5*time.Second, "status clear", func() bool {
		st, err := fleet.GetStatus(ctx, e.js, e.names)
		return err == nil && st.DLQRefusing.Tasks == 0 && !st.DLQFull
	})
	r.stop()
	lost, dups := res.account(t, e, ids)
	if lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
}

// TestInflightBytesBounded: with a budget of in-flight bytes smaller than
// the workers' share, the bytes held or asked for never exceed it.
func TestInflightBytesBounded(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	var peak, last atomic.Int64
	observe := func(n int64) {
		last.Store(n)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				return
			}
		}
	}
	const budget, maxMsg = 256 << 10, 48 << 10 // 16 workers would want 768 KiB
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "sleep", Executor: executor.Sleep(time.Minute)})
	res := e.collectResults()
	var inFlight, maxInFlight atomic.Int64
	counting := executor.Func(func(ctx context.Context, t *task.Envelope) ([]byte, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		return nil, nil
	})
	_ = reg.Register(executor.Node{Type: "big", Executor: counting})
	r := e.startWith(reg, runnerOpts{workers: 16, maxInflight: budget, maxMsgBytes: maxMsg, onInflight: observe}, nil)
	var ids []string
	body := strings.Repeat("p", 40<<10) // with the envelope, well under 48 KiB
	for i := range 60 {
		id := fmt.Sprintf("big-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "big", ReplyTo: "results." + id, Payload: []byte(body)})
	}
	eventually(t, 30*time.Second, "every task done", func() bool {
		n, _, _ := res.count()
		return n == len(ids)
	})
	r.stop()
	if p := peak.Load(); p > budget || p < maxMsg {
		t.Errorf("peak in-flight bytes %d; want at most the budget %d, and some use", p, budget)
	}
	// 256 KiB holds at most six 41 KiB tasks: never all 16 workers.
	if m := maxInFlight.Load(); m > budget/(40<<10) || m < 2 {
		t.Errorf("%d tasks ran at once; want 2..%d under the budget", m, budget/(40<<10))
	}
	if n := last.Load(); n != 0 {
		t.Errorf("%d bytes still counted in flight after shutdown", n)
	}
	lost, dups := res.account(t, e, ids)
	if lost != 0 {
		t.Fatalf("lost %d (duplicates %d)", lost, dups)
	}
}

// TestOversizeTaskDoesNotBlockQueue: a task larger than the budget allows
// for one message (a long subject, a mis-set limit) is refused by the
// server for a pull request's max_bytes; the puller then pulls it alone
// without a byte limit, so it cannot stop the tasks behind it.
func TestOversizeTaskDoesNotBlockQueue(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	res := e.collectResults()
	r := e.startWith(reg, runnerOpts{workers: 1, maxInflight: 1 << 20, maxMsgBytes: 16 << 10}, nil)
	var ids []string
	publish := func(id string, size int) {
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "echo", ReplyTo: "results." + id, Payload: []byte(strings.Repeat("x", size))})
	}
	publish("before", 1<<10)
	publish("huge", 100<<10)
	for i := range 10 {
		publish(fmt.Sprintf("after-%d", i), 1<<10)
	}
	eventually(t, 20*time.Second, "every task done", func() bool {
		n, _, _ := res.count()
		return n == len(ids)
	})
	r.stop()
	lost, dups := res.account(t, e, ids)
	if lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
}

// hostileParams returns a msgpack envelope of about size bytes whose params
// are n values of the costliest kind to decode (one-entry maps {"":{}}),
// padded with a payload; it asks for its result on results.<id>.
func hostileParams(id string, n, size int) []byte {
	var b []byte
	str := func(s string) []byte { return append([]byte{0xd9, byte(len(s))}, s...) }
	b = append(b, 0x85) // map of 5
	b = append(append(b, str("id")...), str(id)...)
	b = append(append(b, str("node_type")...), str("echo")...)
	b = append(append(b, str("reply_to")...), str("results."+id)...)
	b = append(b, str("params")...)
	b = append(b, 0x81)
	b = append(b, str("a")...)
	b = append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n)) // array 32
	for range n {
		b = append(b, 0x81, 0xa0, 0x80) // {"": {}}
	}
	b = append(b, str("payload")...)
	pad := max(size-len(b)-5, 0)
	b = append(b, 0xc6, byte(pad>>24), byte(pad>>16), byte(pad>>8), byte(pad)) // bin 32
	return append(b, make([]byte, pad)...)
}

// TestHostileParamsBounded: tasks of 900 KiB built to cost the most memory
// when decoded (over 100 times their size before the params cap) are
// dead-lettered as invalid, those at the cap run, and the consumer's heap
// stays far below what decoding them whole would take.
func TestHostileParamsBounded(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Func(func(context.Context, *task.Envelope) ([]byte, error) { return []byte("ok"), nil })})
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
		}
	}()
	r := e.start(reg, runnerOpts{workers: 4})
	const size = 900 << 10
	var ids []string
	for i := range 8 {
		id := fmt.Sprintf("hostile-%d", i)
		ids = append(ids, id)
		e.publishRaw(&natsMsg{subject: "tasks.echo", data: string(hostileParams(id, (size-200)/3, size))})
	}
	for i := range 8 {
		id := fmt.Sprintf("at-cap-%d", i)
		ids = append(ids, id)
		e.publishRaw(&natsMsg{subject: "tasks.echo", data: string(hostileParams(id, (task.MaxParamValues-3)/3, size))})
	}
	var refused []*dlq.Record
	eventually(t, 60*time.Second, "every task settled", func() bool {
		n, _, _ := res.count()
		refused = refused[:0]
		for _, r := range e.records() {
			refused = append(refused, r.rec)
		}
		return n == 8 && len(refused) == 8
	})
	r.stop()
	close(stop)
	<-sampled
	for _, rec := range refused {
		if !strings.HasPrefix(rec.TaskID, "hostile-") || rec.Reason != dlq.ReasonInvalid || !strings.Contains(rec.Error, "the limit is 10000") || len(rec.Data) < size {
			t.Errorf("record %s: reason %s, %d bytes: %s", rec.TaskID, rec.Reason, len(rec.Data), rec.Error)
		}
	}
	// Decoding one hostile task whole took ~117 MiB; eight at once ~1 GiB.
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap grew by at most %.1f MiB while 16 tasks of 900 KiB were decoded (4 workers)", float64(grew)/(1<<20))
	if grew > 256<<20 { // the in-process server holds the tasks and records too
		t.Errorf("the heap grew by %d MiB; decoding is not bounded", grew>>20)
	}
	lost, dups := res.account(t, e, ids)
	if lost != 0 {
		t.Fatalf("lost %d (duplicates %d)", lost, dups)
	}
}

// TestFullDLQHoldsAtMostHalfTheWorkers: refused records hold at most half
// of a process's workers; the others' tasks are handed back with a growing
// delay, so tasks that succeed keep a worker, and nothing is lost.
func TestFullDLQHoldsAtMostHalfTheWorkers(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{DLQMaxBytes: 64}) // too small for any record
	ctx := context.Background()
	reg := brokenRegistry(nil)
	promReg := prometheus.NewRegistry()
	res := e.collectResults()
	r := e.start(reg, runnerOpts{workers: 4, retryDelay: 50 * time.Millisecond, metrics: metrics.New(promReg)})
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("broken-%d", i)
		ids = append(ids, id)
		e.publish(&task.Envelope{ID: id, NodeType: "broken"})
	}
	eventually(t, 10*time.Second, "two tasks held", func() bool { return gaugeValue(t, promReg, "nodeq_dlq_held_tasks") == 2 })
	ids = append(ids, e.publishEchoes("echo", 20)...)
	eventually(t, 20*time.Second, "every echo task done while two workers hold records", func() bool {
		n, _, _ := res.count()
		return n == 20
	})
	if g := gaugeValue(t, promReg, "nodeq_dlq_held_tasks"); g != 2 {
		t.Errorf("%v tasks held; want 2 (half of 4 workers)", g)
	}
	if _, err := e.js.UpdateStream(ctx, queue.DLQStreamConfig(e.names, queue.StreamOptions{})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every record stored", func() bool {
		return len(e.records()) == 6 && e.streamMsgs(e.names.TaskStream) == 0
	})
	r.stop()
	lost, dups := res.account(t, e, ids)
	if lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
}

// brokenRegistry runs echo and "broken", a node that always fails for
// good (Manifest); runs, if set, counts broken's runs.
func brokenRegistry(runs *atomic.Int64) *executor.Registry {
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	_ = reg.Register(executor.Node{Type: "broken", Executor: executor.Func(func(context.Context, *task.Envelope) ([]byte, error) {
		if runs != nil {
			runs.Add(1)
		}
		return nil, resilience.Errorf(resilience.Manifest, "width must be positive")
	})})
	return reg
}

// publishEchoes publishes n echo tasks <prefix>-<i> asking for results on
// results.<id>, and returns their ids.
func (e *env) publishEchoes(prefix string, n int) []string {
	e.t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		e.publish(&task.Envelope{ID: ids[i], NodeType: "echo", ReplyTo: "results." + ids[i], Payload: []byte("x")})
	}
	return ids
}
