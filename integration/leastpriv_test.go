package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// The users of the least-privilege configuration in docs/security.md.
const (
	lpProducer = "nodeq-producer"
	lpConsumer = "nodeq-consumer"
	lpOperator = "nodeq-operator"
)

// lpPasswords are the passwords the configuration reads from nats-server's environment.
var lpPasswords = map[string]string{lpProducer: "producer-pw", lpConsumer: "consumer-pw", lpOperator: "operator-pw"}

const lpConfMarker = "# nodeq least-privilege nats-server configuration"

// leastPrivConf returns the nats-server configuration block of
// docs/security.md, exactly as printed there.
func leastPrivConf(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "```conf\n"+lpConfMarker)
	if i < 0 {
		t.Fatalf("docs/security.md has no ```conf block starting with %q", lpConfMarker)
	}
	s = s[i+len("```conf\n"):]
	j := strings.Index(s, "\n```")
	if j < 0 {
		t.Fatal("the configuration block of docs/security.md is not closed")
	}
	return s[:j+1]
}

// withOptionalLines uncomments the commented-out permission lines of the
// configuration (the set-up and fleet blocks), as the docs tell readers to.
func withOptionalLines(t *testing.T, conf string) string {
	t.Helper()
	var out []string
	n := 0
	for _, line := range strings.Split(conf, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, `# "`) {
			line = line[:len(line)-len(trimmed)] + strings.TrimPrefix(trimmed, "# ")
			n++
		}
		out = append(out, line)
	}
	if n == 0 {
		t.Fatal("the configuration has no commented-out permission lines")
	}
	return strings.Join(out, "\n")
}

// startLeastPriv starts a nats-server from conf, on a random loopback port
// with a temporary store.
func startLeastPriv(t *testing.T, conf string) *server.Server {
	t.Helper()
	for user, pw := range lpPasswords {
		t.Setenv(strings.ToUpper(strings.ReplaceAll(user, "-", "_"))+"_PASSWORD", pw)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the configuration of docs/security.md does not load: %v", err)
	}
	if !opts.JetStream || len(opts.Users) != 3 {
		t.Fatalf("configuration: jetstream %v, %d users; want JetStream and three users", opts.JetStream, len(opts.Users))
	}
	return natstest.ServerWith(t, func(o *server.Options) {
		*o = *opts
		o.Host, o.Port, o.StoreDir = "127.0.0.1", server.RANDOM_PORT, filepath.Join(dir, "jetstream")
		o.NoLog, o.NoSigs = true, true
	})
}

// lpConn is a connection as one user, recording the permission violations
// the server reports to it.
type lpConn struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []string
}

func connectAs(t *testing.T, s *server.Server, user string) *lpConn {
	t.Helper()
	c := &lpConn{user: user}
	opts := []nats.Option{nats.UserInfo(user, lpPasswords[user]), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err.Error())
		c.mu.Unlock()
	})}
	if user == lpConsumer {
		opts = append(opts, queue.ConsumerInbox()) // as cmd/consumer connects
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc, c.js = nc, newJS(t, nc)
	return c
}

func (c *lpConn) violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// noViolations fails the test if the server refused anything c did.
func (c *lpConn) noViolations(t *testing.T) {
	t.Helper()
	if v := c.violations(); len(v) > 0 {
		t.Errorf("%s was refused: %v", c.user, v)
	}
}

// refused reports whether the server refuses c a publish on subject.
func (c *lpConn) refused(t *testing.T, subject string) bool {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for Publish to %q", subject)
	if err := c.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, v := range c.violations() {
			if strings.Contains(v, want) {
				return true
			}
		}
	}
	return false
}

func (c *lpConn) streamMsgs(t *testing.T, name string) uint64 {
	t.Helper()
	s, err := c.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// harden sets deny_delete and deny_purge on the task stream and
// deny_purge on the dead-letter stream, as docs/security.md recommends.
func (c *lpConn) harden(t *testing.T, names queue.Names) {
	t.Helper()
	ctx := context.Background()
	for _, h := range []struct {
		stream                string
		denyDelete, denyPurge bool
	}{{names.TaskStream, true, true}, {names.DLQStream, false, true}} {
		s, err := c.js.Stream(ctx, h.stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.DenyDelete, cfg.DenyPurge = h.denyDelete, h.denyPurge
		cfg.Metadata = map[string]string{"hardened-by": "ops"}
		if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("harden %s as %s: %v", h.stream, c.user, err)
		}
	}
}

// producerBinary builds cmd/producer once per test run, next to the
// consumer binary.
func producerBinary(t *testing.T) string { return buildCommand(t, "producer") }

// commandEnv is the environment of a nodeq command connecting as user:
// nothing of the test's own NODEQ_* or NATS_* settings, the password in
// NODEQ_NATS_PASSWORD.
func commandEnv(user string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODEQ_") && !strings.HasPrefix(kv, "NATS_") {
			env = append(env, kv)
		}
	}
	return append(env, "NODEQ_NATS_PASSWORD="+lpPasswords[user])
}

// producerAs runs the producer command as user and returns its exit code
// and output. stderr must never show a permissions violation.
func producerAs(t *testing.T, s *server.Server, user string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, producerBinary(t), append(args, "--nats-url", s.ClientURL(), "--nats-user", user)...)
	cmd.Env = commandEnv(user)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("producer %v: %v", args, err)
	}
	if strings.Contains(errb.String(), "Permissions Violation") {
		t.Errorf("producer %v as %s was refused something:\n%s", args, user, errb.String())
	}
	return code, out.String(), errb.String()
}

// lpProcess is a consumer process.
type lpProcess struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once the process has exited
}

// startConsumerAs runs the consumer command as user with the given
// configuration and waits until it logs that it is ready.
func startConsumerAs(t *testing.T, s *server.Server, user, cfgYAML string) *lpProcess {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "nodeq.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &lpProcess{log: filepath.Join(dir, "consumer.log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(consumerBinary(t), "--config", cfgFile, "--nats-url", s.ClientURL(), "--nats-user", user)
	p.cmd.Env = commandEnv(user)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("consumer log:\n%s", p.output())
		}
	})
	for !strings.Contains(p.output(), "consumer ready") {
		select {
		case <-p.exited:
			t.Fatalf("the consumer exited: %v\n%s", p.cmd.ProcessState, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the consumer was not ready after 30s:\n%s", p.output())
		}
	}
	t.Logf("consumer as %s ready in %v", user, time.Since(start).Round(time.Millisecond))
	return p
}

func (p *lpProcess) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// stop sends SIGTERM and waits for the process to exit 0.
func (p *lpProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the consumer did not stop within 20s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the consumer exited with %d", code)
	}
}

// lpResults collects task results sent to _INBOX.lp.<task id>, as the
// producer user (which may subscribe only to _INBOX.>).
type lpResults struct {
	mu     sync.Mutex
	ok     map[string]int
	failed map[string]int
}

func collectResultsAs(t *testing.T, c *lpConn) *lpResults {
	t.Helper()
	r := &lpResults{ok: map[string]int{}, failed: map[string]int{}}
	sub, err := c.nc.Subscribe("_INBOX.lp.>", func(m *nats.Msg) {
		res, err := task.DecodeResult(m.Data, m.Header.Get(queue.HeaderContentType))
		if err != nil {
			return
		}
		r.mu.Lock()
		if res.OK {
			r.ok[res.TaskID]++
		} else {
			r.failed[res.TaskID]++
		}
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

func (r *lpResults) succeeded(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, id := range ids {
		if r.ok[id] > 0 {
			n++
		}
	}
	return n
}

// dlqTaskIDs lists the dead-lettered task IDs with `producer dlq list` as the operator.
func dlqTaskIDs(t *testing.T, s *server.Server) map[string]string {
	t.Helper()
	code, out, errOut := producerAs(t, s, lpOperator, "dlq", "list", "--json", "-n", "10000")
	if code != 0 {
		t.Fatalf("dlq list: exit %d\n%s", code, errOut)
	}
	ids := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var it struct {
			Seq    uint64 `json:"seq"`
			TaskID string `json:"task_id"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
			t.Fatalf("dlq list line %q: %v", sc.Text(), err)
		}
		ids[it.TaskID] = it.Reason + ":" + strconv.FormatUint(it.Seq, 10)
	}
	return ids
}

// account prints and checks the accounting line: every published task
// succeeded or was dead-lettered, none is lost.
func account(t *testing.T, published []string, r *lpResults, dead map[string]string, extraOK map[string]bool) {
	t.Helper()
	succeeded, deadLettered, lost := 0, 0, 0
	var lostIDs []string
	r.mu.Lock()
	for _, id := range published {
		switch {
		case r.ok[id] > 0 || extraOK[id]:
			succeeded++
		case dead[id] != "":
			deadLettered++
		default:
			lost++
			lostIDs = append(lostIDs, id)
		}
	}
	r.mu.Unlock()
	t.Logf("published %d = succeeded %d + dead-lettered %d, %d lost", len(published), succeeded, deadLettered, lost)
	if lost != 0 || succeeded+deadLettered != len(published) {
		t.Fatalf("lost %v", lostIDs)
	}
}

// lpMaxMsgSize is the task stream's max_msg_size the operator sets and
// the consumers are configured with.
const lpMaxMsgSize = 512 << 10

const lpConsumerConfig = `
streams:
  max_msg_size: 512KiB
consumer:
  workers: 4
  pull_wait: 250ms
  shutdown_timeout: 10s
`

// TestLeastPrivilege runs nodeq under the configuration of
// docs/security.md: the operator creates and hardens the streams, the
// consumer command runs as nodeq-consumer, the producer command publishes
// as nodeq-producer, and the operator inspects, pauses, replays and purges
// dead letters. Nobody is refused anything the commands do, and the server
// refuses each user what the docs deny it.
func TestLeastPrivilege(t *testing.T) {
	srv := startLeastPriv(t, leastPrivConf(t))
	names := queue.DefaultNames()
	ctx := context.Background()

	// The operator creates the streams and the consumer, then hardens the streams.
	op := connectAs(t, srv, lpOperator)
	if err := queue.EnsureStreams(ctx, op.js, names, queue.StreamOptions{MaxMsgSize: lpMaxMsgSize, Logger: testLogger(t)}); err != nil {
		t.Fatalf("set-up as the operator: %v", err)
	}
	if _, err := queue.EnsureConsumer(ctx, op.js, names, queue.ConsumerOptions{Logger: testLogger(t)}); err != nil {
		t.Fatalf("set-up as the operator: %v", err)
	}
	op.harden(t, names)

	cons := startConsumerAs(t, srv, lpConsumer, lpConsumerConfig)
	prod := connectAs(t, srv, lpProducer)
	res := collectResultsAs(t, prod)

	// The producer publishes 40 echo tasks, 10 that fail permanently once
	// (then succeed: the fault node counts per task in its process), and 2
	// of a node type nobody runs.
	var lines bytes.Buffer
	var published, faults []string
	add := func(id, nodeType string, params string) {
		published = append(published, id)
		fmt.Fprintf(&lines, `{"id":%q,"node_type":%q,"payload":{"id":%q},"params":%s,"reply_to":"_INBOX.lp.%s"}`+"\n", id, nodeType, id, params, id)
	}
	for i := range 40 {
		add(fmt.Sprintf("echo-%d", i), "echo", "{}")
	}
	for i := range 10 {
		id := fmt.Sprintf("fault-%d", i)
		faults = append(faults, id)
		add(id, "fault", `{"kind":"Manifest","times":1,"message":"width must be positive"}`)
	}
	add("nosuch-0", "nosuch", "{}")
	add("nosuch-1", "nosuch", "{}")
	tasksFile := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(tasksFile, lines.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := producerAs(t, srv, lpProducer, "publish", "--file", tasksFile, "--quiet")
	if code != 0 || !strings.HasPrefix(out, "published 52, duplicates 0, failed 0") {
		t.Fatalf("producer publish --file: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = producerAs(t, srv, lpProducer, "publish", "echo", `{"text":"hi"}`, "--wait", "--id", "wait-0", "--timeout", "20s")
	if code != 0 || out != "{\"text\":\"hi\"}\n" {
		t.Fatalf("producer publish --wait: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	published = append(published, "wait-0")
	waited := map[string]bool{"wait-0": true}

	eventually(t, 30*time.Second, "every task to succeed or be dead-lettered", func() bool {
		return res.succeeded(published) == 40 && op.streamMsgs(t, names.DLQStream) == 12 && op.streamMsgs(t, names.TaskStream) == 0
	})
	dead := dlqTaskIDs(t, srv)
	account(t, published, res, dead, waited)
	if len(dead) != 12 {
		t.Fatalf("dead letters %v, want the 10 fault and 2 nosuch tasks", dead)
	}

	// The operator's read-only commands.
	code, out, errOut = producerAs(t, srv, lpOperator, "dlq", "stats", "--json")
	if code != 0 || !strings.Contains(out, `"total":12`) {
		t.Fatalf("dlq stats: exit %d\n%s%s", code, out, errOut)
	}
	seq := strings.Split(dead["fault-3"], ":")[1]
	code, out, errOut = producerAs(t, srv, lpOperator, "dlq", "show", seq)
	if code != 0 || !strings.Contains(out, "fault-3") || !strings.Contains(out, "width must be positive") {
		t.Fatalf("dlq show %s: exit %d\n%s%s", seq, code, out, errOut)
	}

	// Pause the fleet; while it is paused, tasks wait, and each user is
	// refused what the docs deny it.
	if code, out, errOut = producerAs(t, srv, lpOperator, "pause", "--until", "1h"); code != 0 {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	var st fleet.Status
	code, out, errOut = producerAs(t, srv, lpOperator, "status", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !st.Paused || st.DeadLetters != 12 {
		t.Fatalf("status while paused: exit %d\n%s%s", code, out, errOut)
	}
	for i := range 3 {
		id := fmt.Sprintf("paused-%d", i)
		published = append(published, id)
		if _, err := queue.NewPublisher(prod.js, names).Publish(ctx, &task.Envelope{ID: id, NodeType: "echo", ReplyTo: "_INBOX.lp." + id}); err != nil {
			t.Fatalf("publish as the producer: %v", err)
		}
	}
	eventually(t, 5*time.Second, "the consumer to pull while paused", func() bool {
		st, err := fleet.GetStatus(ctx, op.js, names)
		return err == nil && st.Paused && st.Waiting > 0 && st.Pending == 3
	})
	denied := map[string][]string{
		lpConsumer: {
			"$JS.API.STREAM.PURGE.NODEQ_TASKS", "$JS.API.STREAM.DELETE.NODEQ_TASKS", "$JS.API.STREAM.MSG.DELETE.NODEQ_TASKS",
			"$JS.API.STREAM.CREATE.NODEQ_TASKS", "$JS.API.STREAM.UPDATE.NODEQ_TASKS", "$JS.API.STREAM.PURGE.NODEQ_DLQ",
			"$JS.API.STREAM.MSG.DELETE.NODEQ_DLQ", "$JS.API.CONSUMER.PAUSE.NODEQ_TASKS.nodeq-workers",
			"$JS.API.CONSUMER.DELETE.NODEQ_TASKS.nodeq-workers", "tasks.echo", "$KV.nodeq_breakers.nodeq-workers", "$KV.other.key",
		},
		lpProducer: {
			"dlq.echo", "$JS.API.STREAM.PURGE.NODEQ_TASKS", "$JS.API.STREAM.DELETE.NODEQ_TASKS", "$JS.API.STREAM.INFO.NODEQ_TASKS",
			"$JS.API.CONSUMER.MSG.NEXT.NODEQ_TASKS.nodeq-workers",
			"$JS.ACK.NODEQ_TASKS.nodeq-workers.1.1.1.1.1", "$JS.API.CONSUMER.PAUSE.NODEQ_TASKS.nodeq-workers",
		},
		lpOperator: {
			"$JS.API.STREAM.PURGE.NODEQ_TASKS", "$JS.API.STREAM.DELETE.NODEQ_TASKS", "$JS.API.STREAM.DELETE.NODEQ_DLQ",
			"$JS.API.STREAM.MSG.DELETE.NODEQ_TASKS", "$JS.API.CONSUMER.DELETE.NODEQ_TASKS.nodeq-workers",
			"$JS.API.CONSUMER.MSG.NEXT.NODEQ_TASKS.nodeq-workers", "$JS.ACK.NODEQ_TASKS.nodeq-workers.1.1.1.1.1", "dlq.echo",
		},
	}
	for _, user := range []string{lpConsumer, lpProducer, lpOperator} {
		c := connectAs(t, srv, user)
		for _, subj := range denied[user] {
			if !c.refused(t, subj) {
				t.Errorf("%s may publish on %s", user, subj)
			}
		}
	}
	if n := op.streamMsgs(t, names.TaskStream); n != 3 {
		t.Fatalf("the task stream holds %d tasks after the refused purge and delete, want 3", n)
	}
	if st, err := fleet.GetStatus(ctx, op.js, names); err != nil || !st.Paused || st.Pending != 3 || st.InFlight != 0 {
		t.Fatalf("after the refused resume: %+v %v; want paused with 3 tasks pending", st, err)
	}

	if code, out, errOut = producerAs(t, srv, lpOperator, "resume"); code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, 10*time.Second, "the paused tasks to run", func() bool { return res.succeeded(published) == 43 })

	// The operator purges the records of the unknown node type and replays the rest.
	code, out, errOut = producerAs(t, srv, lpOperator, "dlq", "purge", "--yes", "--reason", "unknown_node_type")
	if code != 0 || out != "purged 2 records\n" {
		t.Fatalf("dlq purge --reason: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = producerAs(t, srv, lpOperator, "dlq", "replay", "--quiet")
	if code != 0 || !strings.HasPrefix(out, "replayed 10, already replayed 0, skipped 0,") || !strings.Contains(out, " failed 0 ") {
		t.Fatalf("dlq replay: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, 20*time.Second, "the replayed tasks to succeed", func() bool { return res.succeeded(faults) == 10 })
	if n := op.streamMsgs(t, names.DLQStream); n != 0 {
		t.Fatalf("%d records left after replay", n)
	}
	// The hardened DLQ refuses a whole purge, even to the operator; a filtered one deletes record by record.
	code, _, errOut = producerAs(t, srv, lpOperator, "dlq", "purge", "--yes")
	t.Logf("a whole purge of the hardened DLQ: %s", strings.TrimSpace(errOut))
	if code == 0 || !strings.Contains(errOut, "purge") {
		t.Fatalf("a whole purge of the hardened DLQ: exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut = producerAs(t, srv, lpOperator, "dlq", "purge", "--yes", "--until", "0s"); code != 0 {
		t.Fatalf("dlq purge --until 0s: exit %d\n%s%s", code, out, errOut)
	}

	// Final accounting: the two tasks nobody runs stay dead-lettered (their
	// records purged on purpose); every other task succeeded.
	purged := map[string]string{"nosuch-0": "purged", "nosuch-1": "purged"}
	account(t, published, res, purged, waited)
	if s := res.succeeded(published); s != len(published)-3 { // all but nosuch-0, nosuch-1 and wait-0 (answered on its own inbox)
		t.Fatalf("%d of %d tasks succeeded", s, len(published))
	}

	cons.stop(t)
	if log := cons.output(); strings.Contains(log, "Permissions Violation") || strings.Contains(log, "NATS async error") {
		t.Fatalf("the consumer was refused something:\n%s", log)
	}
	op.noViolations(t)
	prod.noViolations(t)
}

// TestLeastPrivConsumerWithoutUpdateRights: a consumer whose user may not
// change streams starts at once against pre-created streams and a consumer
// whose settings differ a little from its configuration, warns about each
// difference, and runs tasks. Against a server without streams it fails
// at once with the error docs/security.md shows.
func TestLeastPrivConsumerWithoutUpdateRights(t *testing.T) {
	conf := leastPrivConf(t)
	names := queue.DefaultNames()
	ctx := context.Background()

	// Nothing there yet: the error of the docs, within a second.
	empty := startLeastPriv(t, conf)
	early := connectAs(t, empty, lpConsumer)
	start := time.Now()
	// Well under the command's 30 s: a refusal noticed only by a timeout fails here.
	setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := queue.EnsureStreams(setupCtx, early.js, names, queue.StreamOptions{Logger: testLogger(t)})
	t.Logf("the refusal took %v", time.Since(start))
	doc, _ := os.ReadFile("../docs/security.md")
	var docLine string
	for _, l := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(l, "consumer: task stream NODEQ_TASKS does not exist") {
			docLine = l
		}
	}
	if err == nil || docLine == "" || "consumer: "+err.Error() != docLine {
		t.Fatalf("got %v\nthe docs show %q", err, docLine)
	}

	srv := startLeastPriv(t, conf)
	op := connectAs(t, srv, lpOperator)
	if err := queue.EnsureStreams(ctx, op.js, names, queue.StreamOptions{Duplicates: time.Minute, DLQMaxAge: 7 * 24 * time.Hour,
		MaxMsgSize: lpMaxMsgSize, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, op.js, names, queue.ConsumerOptions{MaxAckPending: 500, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	op.harden(t, names)

	c := connectAs(t, srv, lpConsumer)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	start = time.Now()
	setupCtx, cancel = context.WithTimeout(ctx, 10*time.Second) // a refusal noticed only by a timeout fails
	defer cancel()
	if err := queue.EnsureStreams(setupCtx, c.js, names, queue.StreamOptions{MaxMsgSize: lpMaxMsgSize, Logger: logger}); err != nil {
		t.Fatalf("EnsureStreams as %s: %v", lpConsumer, err)
	}
	cons, err := queue.EnsureConsumer(setupCtx, c.js, names, queue.ConsumerOptions{Logger: logger})
	if err != nil {
		t.Fatalf("EnsureConsumer as %s: %v", lpConsumer, err)
	}
	took := time.Since(start)
	t.Logf("set-up as %s against differing streams took %v", lpConsumer, took)
	logMu.Lock()
	l := logs.String()
	logMu.Unlock()
	for _, want := range []string{"stream=NODEQ_TASKS", "duplicate window 1m0s, nodeq wants 2m0s", "stream=NODEQ_DLQ",
		"max_age 168h0m0s, nodeq wants at least 336h0m0s (streams.dlq_max_age)", "consumer=nodeq-workers", "max_ack_pending 500, nodeq wants 1000"} {
		if !strings.Contains(l, want) {
			t.Errorf("the warnings lack %q:\n%s", want, l)
		}
	}
	// The only refusals were the updates nodeq tried.
	for _, v := range c.violations() {
		if !strings.Contains(v, `"$JS.API.STREAM.UPDATE.`) && !strings.Contains(v, `"$JS.API.CONSUMER.CREATE.NODEQ_TASKS.nodeq-workers`) {
			t.Errorf("refused: %s", v)
		}
	}
	c.mu.Lock()
	c.errs = nil
	c.mu.Unlock()

	// Run tasks in process over the consumer user's connection, as the consumer command does.
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: executor.Echo()})
	cfg := config.Default()
	cfg.Consumer.Workers, cfg.Consumer.PullWait = 4, pullWait
	consumerCtx, cancelSetUp := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSetUp()
	run, err := consumer.New(consumerCtx, consumer.Options{Config: cfg, Conn: c.nc, Logger: testLogger(t), Registry: reg, Durable: cons})
	if err != nil {
		t.Fatalf("the consumer's wiring as %s: %v", lpConsumer, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = run.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()

	prod := connectAs(t, srv, lpProducer)
	res := collectResultsAs(t, prod)
	var ids []string
	for i := range 20 {
		id := fmt.Sprintf("a-%d", i)
		ids = append(ids, id)
		if _, err := queue.NewPublisher(prod.js, names).Publish(ctx, &task.Envelope{ID: id, NodeType: "echo", ReplyTo: "_INBOX.lp." + id}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the tasks to run", func() bool { return res.succeeded(ids) == len(ids) })
	account(t, ids, res, nil, nil)
	stop()
	<-done
	c.noViolations(t)
	prod.noViolations(t)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

const lpFleetConfig = `
consumer:
  workers: 2
  pull_wait: 250ms
  shutdown_timeout: 10s
retry:
  policy: none
redelivery:
  max_deliveries: 1
breaker:
  scope: fleet
  failure_threshold: 1
  cooldown: 1s
`

// TestLeastPrivSetupAndFleetLines: with the optional lines of the
// configuration uncommented, the consumer command creates the streams, the
// consumer and the breaker bucket itself, and its fleet breaker trips,
// pauses the consumer, probes and closes, all without a refusal.
func TestLeastPrivSetupAndFleetLines(t *testing.T) {
	srv := startLeastPriv(t, withOptionalLines(t, leastPrivConf(t)))
	names := queue.DefaultNames()
	cons := startConsumerAs(t, srv, lpConsumer, lpFleetConfig)
	op := connectAs(t, srv, lpOperator)
	op.harden(t, names) // a later start meets hardened streams
	prod := connectAs(t, srv, lpProducer)
	res := collectResultsAs(t, prod)
	ctx := context.Background()
	pub := queue.NewPublisher(prod.js, names)

	if _, err := pub.Publish(ctx, &task.Envelope{ID: "trip", NodeType: "fault", Params: task.Params{"kind": "Transport"}, ReplyTo: "_INBOX.lp.trip"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the fleet breaker to open and pause the consumer", func() bool {
		st, err := fleet.GetStatus(ctx, op.js, names)
		return err == nil && st.Breaker == "open" && st.Paused && st.DeadLetters == 1
	})
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("after-%d", i)
		ids = append(ids, id)
		if _, err := pub.Publish(ctx, &task.Envelope{ID: id, NodeType: "echo", ReplyTo: "_INBOX.lp." + id}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the probe to close the breaker and the tasks to run", func() bool {
		st, err := fleet.GetStatus(ctx, op.js, names)
		return err == nil && st.Breaker == "closed" && !st.Paused && res.succeeded(ids) == len(ids)
	})
	account(t, append(ids, "trip"), res, map[string]string{"trip": "retries_exhausted"}, nil)

	// Restarting against the hardened streams keeps the hardening.
	cons.stop(t)
	again := startConsumerAs(t, srv, lpConsumer, lpFleetConfig)
	s, err := op.js.Stream(ctx, names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !cfg.DenyDelete || !cfg.DenyPurge || cfg.Metadata["hardened-by"] != "ops" {
		t.Fatalf("task stream after a consumer restart: %+v", cfg)
	}
	again.stop(t)
	for i, p := range []*lpProcess{cons, again} {
		if log := p.output(); strings.Contains(log, "Permissions Violation") || strings.Contains(log, "NATS async error") {
			t.Fatalf("consumer %d was refused something:\n%s", i+1, log)
		}
	}
	op.noViolations(t)
	prod.noViolations(t)
}
