package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// TestConcurrentStartCluster: rounds of consumer processes started at the
// same instant against a 3-node cluster with R3 streams, each round with
// fresh stream and consumer names so that every process races to create
// them. Every process becomes ready, and together they run every task.
func TestConcurrentStartCluster(t *testing.T) {
	servers := natstest.Cluster(t, 3)
	concurrentStart(t, natstest.URLs(servers), 3, 3, 3)
}

// TestConcurrentStartSingleServer: the same against one server with R1
// streams and more processes per round.
func TestConcurrentStartSingleServer(t *testing.T) {
	srv := natstest.Server(t)
	concurrentStart(t, srv.ClientURL(), 1, 2, 5)
}

// TestStartBeforeClusterHasLeader: a consumer started when only one node
// of a 3-node cluster is up (no JetStream meta leader) waits, says so in
// its log, and becomes ready once the other nodes join.
func TestStartBeforeClusterHasLeader(t *testing.T) {
	bin := consumerBinary(t)
	base := 21000 + int(time.Now().UnixNano()%4000)*2
	routes := server.RoutesFromStr(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", base, base+1, base+2))
	node := func(i int) *server.Server {
		return natstest.ServerWith(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "nodeq-late", Host: "127.0.0.1", Port: base + i}
			o.Routes = routes
		})
	}
	first := node(0)
	p := startConsumerAt(t, bin, first.ClientURL(), "streams:\n  replicas: 3\nconsumer:\n  startup_timeout: 40s\n", "consumer.log")
	waitLog(t, p, "waiting for the JetStream cluster to elect a leader", 10*time.Second)
	start := time.Now()
	node(1)
	node(2)
	p.waitReady(t, 30*time.Second)
	t.Logf("ready %v after the other two nodes started", time.Since(start).Round(time.Millisecond))
	p.stop(t)
}

// waitLog waits for the process to log text.
func waitLog(t *testing.T, p *startedProcess, text string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%q in %s", text, filepath.Base(p.log)), func() bool {
		b, _ := os.ReadFile(p.log)
		return strings.Contains(string(b), text)
	})
}

func concurrentStart(t *testing.T, url string, replicas, rounds, procs int) {
	bin := consumerBinary(t) // build before the clock starts
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := newJS(t, nc)
	for round := 1; round <= rounds; round++ {
		names := queue.Names{
			TaskStream: fmt.Sprintf("CS%d_TASKS", round), TaskPrefix: fmt.Sprintf("cs%d.tasks", round),
			DLQStream: fmt.Sprintf("CS%d_DLQ", round), DLQPrefix: fmt.Sprintf("cs%d.dlq", round),
			Consumer: fmt.Sprintf("cs%d-workers", round),
		}
		cfg := fmt.Sprintf(`
names:
  task_stream: %s
  task_prefix: %s
  dlq_stream: %s
  dlq_prefix: %s
  consumer: %s
streams:
  replicas: %d
consumer:
  workers: 4
  ack_wait: 5s
  shutdown_timeout: 10s
  reply_subjects: ["results.>"]
nodes:
  sleep: {max_duration: 10s}
`, names.TaskStream, names.TaskPrefix, names.DLQStream, names.DLQPrefix, names.Consumer, replicas)

		start := time.Now()
		var wg sync.WaitGroup
		ps := make([]*startedProcess, procs)
		for i := range ps {
			wg.Go(func() { ps[i] = startConsumerAt(t, bin, url, cfg, fmt.Sprintf("round%d-consumer%d.log", round, i+1)) })
		}
		wg.Wait()
		var slowest time.Duration
		for _, p := range ps {
			ready := p.waitReady(t, 25*time.Second)
			slowest = max(slowest, ready.Sub(start))
		}
		t.Logf("round %d: %d consumers started at once with R%d streams, all ready within %v", round, procs, replicas, slowest.Round(time.Millisecond))

		e := &env{t: t, nc: nc, js: js, names: names}
		res := e.collectResults()
		const n = 60
		ids := e.publishSleeps(fmt.Sprintf("cs%d", round), n, "5ms")
		eventually(t, 30*time.Second, fmt.Sprintf("round %d: every task", round), func() bool { d, _, _ := res.count(); return d == n })
		if lost, _ := res.account(t, e, ids); lost != 0 {
			t.Fatalf("round %d: lost %d", round, lost)
		}
		for _, p := range ps {
			p.stop(t)
		}
	}
}

type startedProcess struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

// startConsumerAt runs the consumer binary against url, logging at info
// level (for "consumer ready") into logName in a temporary directory.
func startConsumerAt(t *testing.T, bin, url, cfgYAML, logName string) *startedProcess {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "nodeq.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o644); err != nil {
		t.Error(err)
		return nil
	}
	logFile, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		t.Error(err)
		return nil
	}
	p := &startedProcess{log: logFile.Name(), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config", cfgFile, "--nats-url", url)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		t.Error(err)
		return nil
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s:\n%s", logName, b)
		}
	})
	return p
}

// waitReady waits for the process to log "consumer ready" and returns when
// it saw it; the test fails if the process exits or times out first.
func (p *startedProcess) waitReady(t *testing.T, timeout time.Duration) time.Time {
	t.Helper()
	if p == nil {
		t.FailNow()
	}
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), `msg="consumer ready"`) {
			return time.Now()
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", filepath.Base(p.log), p.err, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v:\n%s", filepath.Base(p.log), timeout, b)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *startedProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", filepath.Base(p.log), p.err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not exit within 15s of SIGTERM", filepath.Base(p.log))
	}
}
