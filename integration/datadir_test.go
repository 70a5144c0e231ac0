package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// embeddedConsumer is a consumer process running its own embedded
// nats-server on a store directory.
type embeddedConsumer struct {
	cmd    *exec.Cmd
	log    string
	url    string        // the embedded server's client URL, from the log
	exited chan struct{} // closed once the process has exited
}

// plainEnv is the test's environment without NODEQ_* and NATS_* settings,
// so that a command sees only the flags it is given.
func plainEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODEQ_") && !strings.HasPrefix(kv, "NATS_") {
			env = append(env, kv)
		}
	}
	return env
}

var natsURLInLog = regexp.MustCompile(`msg="embedded nats-server listening" nats_url=(nats://\S+)`)

// startEmbeddedConsumer runs the consumer binary with an embedded server on
// dataDir and waits until it is ready.
func startEmbeddedConsumer(t *testing.T, dataDir, name string) *embeddedConsumer {
	t.Helper()
	c := &embeddedConsumer{log: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(consumerBinary(t), "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--workers", "8")
	c.cmd.Env = plainEnv()
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, c.output())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(c.output(), "consumer ready") {
		select {
		case <-c.exited:
			t.Fatalf("%s exited: %v\n%s", name, c.cmd.ProcessState, c.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s:\n%s", name, c.output())
		}
	}
	m := natsURLInLog.FindStringSubmatch(c.output())
	if m == nil {
		t.Fatalf("%s logged no nats_url:\n%s", name, c.output())
	}
	c.url = m[1]
	return c
}

func (c *embeddedConsumer) output() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// echoClient publishes echo tasks to a server and counts their results.
type echoClient struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	mu  sync.Mutex
	ok  map[string]bool
	ids []string
}

func newEchoClient(t *testing.T, url string) *echoClient {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &echoClient{nc: nc, js: js, ok: map[string]bool{}}
	if _, err := nc.Subscribe("_INBOX.datadir.>", func(m *nats.Msg) {
		res, err := task.DecodeResult(m.Data, m.Header.Get(queue.HeaderContentType))
		if err != nil || !res.OK {
			return
		}
		c.mu.Lock()
		c.ok[res.TaskID] = true
		c.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *echoClient) publish(t *testing.T, prefix string, n int) {
	t.Helper()
	pub := queue.NewPublisher(c.js, queue.DefaultNames())
	for i := range n {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pub.Publish(ctx, &task.Envelope{ID: id, NodeType: "echo", Payload: []byte(id), ReplyTo: "_INBOX.datadir." + id})
		cancel()
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		c.ids = append(c.ids, id)
	}
}

func (c *echoClient) succeeded() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range c.ids {
		if c.ok[id] {
			n++
		}
	}
	return n
}

func (c *echoClient) streamMsgs(t *testing.T, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestSecondConsumerOnDataDirRefused: a second consumer with an embedded
// server on a store directory in use exits 1 with a message naming the
// holder and what to do, and the first keeps working; a consumer killed
// with SIGKILL leaves a lock file that blocks nobody.
func TestSecondConsumerOnDataDirRefused(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "nodeq-data")
	first := startEmbeddedConsumer(t, dataDir, "first")
	client := newEchoClient(t, first.url)
	client.publish(t, "before", 200)
	eventually(t, 60*time.Second, "the tasks published before", func() bool { return client.succeeded() == 200 })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, consumerBinary(t), "--data-dir", dataDir, "--listen", "127.0.0.1:0")
	second.Env = plainEnv()
	var out bytes.Buffer
	second.Stdout, second.Stderr = &out, &out
	err := second.Run()
	if ctx.Err() != nil {
		t.Fatalf("the second consumer was still running after 60s:\n%s", out.String())
	}
	if code := second.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("second consumer: %v, exit code %d, want 1:\n%s", err, code, out.String())
	}
	for _, want := range []string{
		fmt.Sprintf("store directory %s is in use by another nodeq consumer (pid %d, %s, since ", dataDir, first.cmd.Process.Pid, first.url),
		fmt.Sprintf("connect to it with --nats-url %s (NODEQ_NATS_URL), or give this consumer its own --data-dir", first.url),
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("second consumer's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "embedded nats-server listening") {
		t.Fatalf("the second consumer started a server on the store in use:\n%s", out.String())
	}
	t.Logf("second consumer refused: %s", strings.TrimSpace(out.String()))

	client.publish(t, "after", 200)
	eventually(t, 60*time.Second, "the tasks published after the refusal", func() bool { return client.succeeded() == 400 })

	// A consumer that dies without releasing anything leaves its lock file;
	// the OS dropped the lock, so the next consumer starts on the store.
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	if b, err := os.ReadFile(filepath.Join(dataDir, natsconn.StoreLockFile)); err != nil || !bytes.Contains(b, []byte(first.url)) {
		t.Fatalf("lock file of the killed consumer: %q, %v", b, err)
	}
	third := startEmbeddedConsumer(t, dataDir, "third")
	client.nc.Close()
	client2 := newEchoClient(t, third.url)
	client2.ids = client.ids // every task published so far, to account for them all
	client.mu.Lock()
	for id := range client.ok {
		client2.ok[id] = true
	}
	client.mu.Unlock()
	client2.publish(t, "restart", 100)
	eventually(t, 60*time.Second, "the tasks published after the restart", func() bool { return client2.succeeded() == 500 })

	published := len(client2.ids)
	succeeded := client2.succeeded()
	deadLettered := int(client2.streamMsgs(t, "NODEQ_DLQ"))
	left := int(client2.streamMsgs(t, "NODEQ_TASKS"))
	lost := published - succeeded - deadLettered
	t.Logf("published %d = succeeded %d + dead-lettered %d, %d lost (%d left in the task stream)", published, succeeded, deadLettered, lost, left)
	if published != 500 || lost != 0 || left != 0 {
		t.Fatalf("accounting broken: published %d, succeeded %d, dead-lettered %d, lost %d, %d left", published, succeeded, deadLettered, lost, left)
	}
	third.stopTerm(t)
}

// stopTerm sends SIGTERM and waits for a clean exit.
func (c *embeddedConsumer) stopTerm(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the consumer did not stop within 30s of SIGTERM")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the consumer exited with %d", code)
	}
}
