package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// syncBuffer is a log destination that several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// breakerCommand runs producer breaker with args against the env's server
// and returns the control entry it wrote (with the server's timestamp).
func (e *env) breakerCommand(t *testing.T, process string, args ...string) (out string, stored time.Time) {
	t.Helper()
	cmd := exec.Command(producerBinary(t), append(append([]string{"breaker"}, args...), "--nats-url", e.srv.ClientURL())...)
	cmd.Env = append(os.Environ(), "USER=oncall")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("producer breaker %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	kv, err := e.js.KeyValue(context.Background(), fleet.ControlBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), fleet.ControlKey(e.names, process))
	if err != nil {
		t.Fatal(err)
	}
	return string(b), entry.Created()
}

// changes records when each breaker last entered each state.
type changes struct {
	mu   sync.Mutex
	last map[string]time.Time // "<breaker> <state>"
}

func (c *changes) watch(b *resilience.Breaker) {
	b.Observe(func(tr resilience.Transition) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.last[tr.Name+" "+tr.To.String()] = time.Now()
	})
}

func (c *changes) at(name string, s resilience.State) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[name+" "+s.String()]
}

// TestOperatorOpensAndClosesTheBreaker: an operator opens the breaker of
// every consumer by hand with producer breaker open; within a second both
// consumers' breakers are open and no task starts while they are; producer
// breaker close closes them at once and every task then succeeds. Both
// commands are logged with who asked and why.
func TestOperatorOpensAndClosesTheBreaker(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	runs := newCounter()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "echo", Executor: runs.wrap(executor.Echo())})
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	seen := &changes{last: map[string]time.Time{}}
	var breakers []*resilience.Breaker
	for _, name := range []string{"a", "b"} {
		b := resilience.NewBreaker(resilience.BreakerSettings{Name: name, ReadyToTrip: resilience.ConsecutiveFailures(5)})
		seen.watch(b)
		breakers = append(breakers, b)
		e.startWith(reg, runnerOpts{breaker: b}, log)
	}
	ids := e.publishEchoes("before", 20)
	eventually(t, 10*time.Second, "the tasks before the open", func() bool { d, _, _ := res.count(); return d == len(ids) })

	out, stored := e.breakerCommand(t, "", "open", "--for", "10m", "--reason", "database maintenance")
	t.Logf("producer breaker open:\n%s", out)
	eventually(t, 5*time.Second, "both breakers to open", func() bool {
		return breakers[0].State() == resilience.StateOpen && breakers[1].State() == resilience.StateOpen
	})
	for _, b := range breakers {
		t.Logf("breaker %s opened %v after the command was stored", b.Name(), seen.at(b.Name(), resilience.StateOpen).Sub(stored).Round(time.Millisecond))
		if s := b.Snapshot(); !s.Forced || s.Until.Before(stored.Add(9*time.Minute)) {
			t.Fatalf("breaker %s: %+v, want forced open for 10m", b.Name(), s)
		}
	}

	// While open: tasks wait in the stream and none starts, through
	// several pull waits.
	before := runs.total()
	waiting := e.publishEchoes("during", 30)
	ids = append(ids, waiting...)
	time.Sleep(10*pullWait + 500*time.Millisecond)
	if n := runs.total() - before; n != 0 {
		t.Fatalf("%d tasks started while the breaker was open by hand", n)
	}
	if n := e.streamMsgs(e.names.TaskStream); n != uint64(len(waiting)) {
		t.Fatalf("%d tasks in the stream while open, want the %d published", n, len(waiting))
	}

	out, stored = e.breakerCommand(t, "", "close", "--reason", "maintenance done")
	t.Logf("producer breaker close:\n%s", out)
	eventually(t, 5*time.Second, "both breakers to close", func() bool {
		return breakers[0].State() == resilience.StateClosed && breakers[1].State() == resilience.StateClosed
	})
	for _, b := range breakers {
		t.Logf("breaker %s closed %v after the command was stored", b.Name(), seen.at(b.Name(), resilience.StateClosed).Sub(stored).Round(time.Millisecond))
	}
	eventually(t, 20*time.Second, "every task after the close", func() bool { d, _, _ := res.count(); return d == len(ids) })

	if lost, dups := res.account(t, e, ids); lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
	if n := e.streamMsgs(e.names.DLQStream); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
	l := logs.String()
	for _, want := range []string{
		`msg="circuit breaker opened by operator`, `op=open by=oncall@`, `reason="database maintenance" target="every process"`,
		`msg="circuit breaker closed by operator"`, `reason="maintenance done"`,
	} {
		if c := strings.Count(l, want); c != 2 { // one line per consumer
			t.Errorf("the consumers logged %q %d times, want 2:\n%s", want, c, l)
		}
	}
}

// controlConfig runs echo tasks with the fleet-wide breaker.
const controlConfig = `
consumer:
  workers: 2
  pull_wait: 250ms
  reply_subjects: ["_INBOX.>", "results.>"]
breaker:
  scope: fleet
  failure_threshold: 3
`

// logTime is the time of the first log line of a consumer process with msg.
func logTime(t *testing.T, p *startedProcess, msg string) time.Time {
	t.Helper()
	b, _ := os.ReadFile(p.log)
	m := regexp.MustCompile(`(?m)^time=(\S+) level=\w+ msg="` + regexp.QuoteMeta(msg)).FindSubmatch(b)
	if m == nil {
		return time.Time{}
	}
	at, err := time.Parse(time.RFC3339Nano, string(m[1]))
	if err != nil {
		t.Fatalf("log time %q: %v", m[1], err)
	}
	return at
}

// TestOperatorControlFleetProcesses: consumer processes with
// breaker.scope fleet take a manual open through the fleet's layer (the
// shared entry and the server-side pause follow), a process started
// during it stays out, and a manual close resumes them all.
func TestOperatorControlFleetProcesses(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	res := e.collectResults()
	bin := consumerBinary(t)
	ps := []*startedProcess{
		startConsumerAt(t, bin, e.srv.ClientURL(), controlConfig, "consumer-a.log"),
		startConsumerAt(t, bin, e.srv.ClientURL(), controlConfig, "consumer-b.log"),
	}
	for _, p := range ps {
		p.waitReady(t, 30*time.Second)
	}
	ids := e.publishEchoes("before", 10)
	eventually(t, 10*time.Second, "the tasks before the open", func() bool { d, _, _ := res.count(); return d == len(ids) })

	const opened, closed = "circuit breaker opened by operator", "circuit breaker closed by operator"
	_, stored := e.breakerCommand(t, "", "open", "--for", "15m", "--reason", "failover drill")
	eventually(t, 5*time.Second, "the fleet to be open and paused on the server", func() bool {
		st, err := fleet.GetStatus(context.Background(), e.js, e.names)
		return err == nil && st.Paused && st.Breaker == "open" && !logTime(t, ps[0], opened).IsZero() && !logTime(t, ps[1], opened).IsZero()
	})
	for i, p := range ps {
		t.Logf("consumer %d logged %q %v after the command was stored", i+1, opened, logTime(t, p, opened).Sub(stored).Round(time.Millisecond))
	}
	late := startConsumerAt(t, bin, e.srv.ClientURL(), controlConfig, "consumer-late.log")
	late.waitReady(t, 30*time.Second)
	if logTime(t, late, opened).IsZero() {
		t.Fatal("a consumer started during the manual open did not take it")
	}
	ps = append(ps, late)

	waiting := e.publishEchoes("during", 20)
	ids = append(ids, waiting...)
	time.Sleep(2 * time.Second) // several pull waits
	if d, _, _ := res.count(); d != len(ids)-len(waiting) {
		t.Fatalf("%d tasks ran while the fleet was open by hand", d-(len(ids)-len(waiting)))
	}
	if n := e.streamMsgs(e.names.TaskStream); n != uint64(len(waiting)) {
		t.Fatalf("%d tasks in the stream while open, want %d", n, len(waiting))
	}

	_, stored = e.breakerCommand(t, "", "close", "--reason", "drill over")
	eventually(t, 20*time.Second, "every task after the close", func() bool { d, _, _ := res.count(); return d == len(ids) })
	for i, p := range ps {
		eventually(t, 5*time.Second, fmt.Sprintf("consumer %d to log %q", i+1, closed), func() bool { return !logTime(t, p, closed).IsZero() })
		t.Logf("consumer %d logged %q %v after the command was stored", i+1, closed, logTime(t, p, closed).Sub(stored).Round(time.Millisecond))
	}
	st, err := fleet.GetStatus(context.Background(), e.js, e.names)
	if err != nil || st.Paused || st.Breaker != "closed" {
		t.Fatalf("after the close: %+v, %v", st, err)
	}
	if lost, dups := res.account(t, e, ids); lost != 0 || dups != 0 {
		t.Fatalf("lost %d, duplicates %d", lost, dups)
	}
	for _, p := range ps {
		p.stop(t)
	}
	for i, p := range ps {
		b, _ := os.ReadFile(p.log)
		for _, bad := range []string{"operator command: the fleet's shared breaker state", "operator control", "NATS async error"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("consumer %d logged %q:\n%s", i+1, bad, b)
			}
		}
	}
}

// TestOperatorControlLeastPrivilege: under the permissions of
// docs/security.md, the operator creates the control bucket and writes
// commands, the consumer follows them without being refused anything, and
// neither the consumer nor the producer user may write a command.
func TestOperatorControlLeastPrivilege(t *testing.T) {
	srv := startLeastPriv(t, leastPrivConf(t))
	names := queue.DefaultNames()
	op := connectAs(t, srv, lpOperator)
	if err := queue.EnsureStreams(context.Background(), op.js, names, queue.StreamOptions{MaxMsgSize: lpMaxMsgSize}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(context.Background(), op.js, names, queue.ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	cons := startConsumerAs(t, srv, lpConsumer, lpConsumerConfig)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"breaker", "open", "--for", "10m", "--reason", "least privilege"}, `msg="circuit breaker opened by operator`},
		{[]string{"breaker", "close", "--by", "ops@lp"}, `msg="circuit breaker closed by operator" op=close by=ops@lp`},
	} {
		if code, out, errOut := producerAs(t, srv, lpOperator, c.args...); code != 0 {
			t.Fatalf("producer %v as the operator: exit %d\n%s%s", c.args, code, out, errOut)
		}
		eventually(t, 5*time.Second, "the consumer to log "+c.want, func() bool { return strings.Contains(cons.output(), c.want) })
	}

	key := "$KV." + fleet.ControlBucket + "." + fleet.ControlKey(names, "")
	for _, user := range []string{lpConsumer, lpProducer} {
		if c := connectAs(t, srv, user); !c.refused(t, key) {
			t.Errorf("%s may write a breaker command", user)
		}
	}
	cons.stop(t)
	for _, line := range strings.Split(cons.output(), "\n") {
		if strings.Contains(line, "nodeq_control") && (strings.Contains(line, "Permissions Violation") || strings.Contains(line, "operator control")) {
			t.Errorf("the consumer was refused the control bucket: %s", line)
		}
	}
}
