package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// The external mode (--external, on by default; --external-only) measures
// nodeq as users run it: a standalone nats-server process (file storage,
// default sync) and the consumer binary with its default configuration
// (only --workers set), both built from this module, next to a raw nats.go
// baseline in the bench process connected over TCP to the same server.
//
// Throughput leaves out process start-up: the consumer runs and is ready,
// the durable consumer is paused on the server, the tasks are published
// (every PubAck checked but the last), the durable is resumed and the last
// task published (see drain), and the clock runs from the resume until the
// task stream (WorkQueue: acked tasks are deleted) is empty and nothing is
// ack-pending. Every task has a new ID. The raw baseline is timed the same way, on the same
// stream and the same durable consumer (so with the same ack_wait and
// max_ack_pending the consumer binary set up) while no consumer binary
// runs: it competes with nothing and pulls under the same server-side
// limits, which is the fair bound.

// sleepWorkers is the worker count of the sleep, latency and memory rows.
const sleepWorkers = 16

// externalPlan sizes the external rows; throughput rows are sized by the
// config (min-seconds, reps) like every other row.
type externalPlan struct {
	workers     []int         // worker counts of the echo rows; must include sleepWorkers
	latencyRate float64       // tasks/s of the latency rows, at most half the 16-worker echo rate
	latencyFor  time.Duration // how long the latency rows publish
	rssPending  int           // sleep-30s tasks waiting in the memory row
	rssAfter    time.Duration // when the memory row reads the peak RSS, from the process's start
}

// planFor returns the plan of a run: short latency rows with --quick.
func planFor(c config) externalPlan {
	d := time.Duration(c.minSeconds * 1.5 * float64(time.Second))
	return externalPlan{workers: []int{4, 16, 128}, latencyRate: 2000, latencyFor: min(max(d, time.Second), 5*time.Second),
		rssPending: 10000, rssAfter: 4 * time.Second}
}

// withTarget fills a row's ratio and target, as run's add does.
func withTarget(r Row, target string, met bool) Row {
	if r.Baseline != 0 {
		r.Ratio = r.Nodeq / r.Baseline
	}
	if target != "" {
		r.Target, r.Met = target, &met
	}
	return r
}

// externalRows builds nats-server and the consumer binary into dir, runs
// them and measures every external row. Every process it starts is gone
// when it returns.
func externalRows(ctx context.Context, c config, plan externalPlan, dir string, progress io.Writer) ([]Row, error) {
	step := func(name string) { fmt.Fprintf(progress, "measuring external: %s...\n", name) }
	step("building nats-server and the consumer binary")
	x, err := startExternal(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer x.close()

	echo := map[int]float64{}
	var sleepRate, rate float64
	var nodeqLat latencies
	for _, w := range plan.workers {
		step(fmt.Sprintf("consumer binary, echo, %d workers", w))
		err := func() error {
			p, err := x.startConsumer(ctx, w)
			if err != nil {
				return err
			}
			defer p.kill()
			if echo[w], err = throughput(c, func(n int) (float64, error) { return x.drainNodeq(ctx, p, n, "echo", nil) }); err != nil {
				return fmt.Errorf("echo, %d workers: %w", w, err)
			}
			if w != sleepWorkers {
				return nil
			}
			step(fmt.Sprintf("consumer binary, sleep 1ms, %d workers", w))
			sleep1ms := func(int) task.Params { return task.Params{"duration": "1ms"} }
			if sleepRate, err = throughput(c, func(n int) (float64, error) { return x.drainNodeq(ctx, p, n, "sleep", sleep1ms) }); err != nil {
				return fmt.Errorf("sleep 1ms: %w", err)
			}
			rate = min(plan.latencyRate, echo[w]/2)
			step(fmt.Sprintf("consumer binary, publish-to-result latency at %.0f/s", rate))
			if nodeqLat, err = x.latency(ctx, rate, plan.latencyFor, p); err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			return nil
		}()
		if err != nil {
			return nil, err
		}
	}
	if rate == 0 {
		return nil, fmt.Errorf("the plan's worker counts %v do not include %d", plan.workers, sleepWorkers)
	}
	step(fmt.Sprintf("consumer binary, echo, %d workers, a log line per success", sleepWorkers))
	var logged float64
	err = func() error {
		p, err := x.startConsumer(ctx, sleepWorkers, "NODEQ_LOG_TASK_SUCCESS=true")
		if err != nil {
			return err
		}
		defer p.kill()
		logged, err = throughput(c, func(n int) (float64, error) { return x.drainNodeq(ctx, p, n, "echo", nil) })
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("echo with log.task_success: %w", err)
	}

	step("raw Consume, async Ack")
	raw, err := throughput(c, func(n int) (float64, error) { return x.drainRaw(ctx, n) })
	if err != nil {
		return nil, fmt.Errorf("raw: %w", err)
	}
	step(fmt.Sprintf("raw Consume, publish-to-reply latency at %.0f/s", rate))
	rawLat, err := x.latency(ctx, rate, plan.latencyFor, nil)
	if err != nil {
		return nil, fmt.Errorf("raw latency: %w", err)
	}

	step(fmt.Sprintf("consumer binary, peak RSS with %d tasks pending", plan.rssPending))
	rss, err := x.consumerPeakRSS(ctx, sleepWorkers, plan.rssPending, plan.rssAfter)
	if err != nil {
		return nil, fmt.Errorf("peak RSS: %w", err)
	}

	var rows []Row
	for _, w := range plan.workers {
		target, met := "", false
		if w == 16 {
			target, met = ">= 0.8", echo[w] >= 0.8*raw
		}
		rows = append(rows, withTarget(Row{Name: fmt.Sprintf("external: consume echo, %d workers, consumer binary defaults", w), Unit: "msgs/s",
			Nodeq: echo[w], Baseline: raw, BaselineName: "raw Consume, async Ack (TCP, same server)"}, target, met))
	}
	rows = append(rows, Row{Name: fmt.Sprintf("external: consume echo, %d workers, log.task_success: true (an info line per task)", sleepWorkers), Unit: "msgs/s",
		Nodeq: logged, Baseline: echo[sleepWorkers], BaselineName: "the same, log.task_success: false (the default)", Ratio: logged / echo[sleepWorkers]})
	bound := float64(sleepWorkers) / 0.001
	rows = append(rows, withTarget(Row{Name: fmt.Sprintf("external: sleep 1ms, %d workers", sleepWorkers), Unit: "msgs/s",
		Nodeq: sleepRate, Baseline: bound, BaselineName: fmt.Sprintf("bound: %d workers / 1 ms", sleepWorkers)}, ">= 0.9", sleepRate >= 0.9*bound))
	step(fmt.Sprintf("%d goroutines sleeping 1ms in a loop", sleepWorkers))
	loop := sleepLoopRate(sleepWorkers, time.Duration(max(c.minSeconds, 1)*float64(time.Second)))
	rows = append(rows, Row{Name: fmt.Sprintf("external: sleep 1ms, %d workers, against this machine's timers", sleepWorkers), Unit: "msgs/s",
		Nodeq: sleepRate, Baseline: loop, BaselineName: fmt.Sprintf("%d goroutines sleeping 1ms in a loop, no NATS", sleepWorkers), Ratio: sleepRate / loop})
	for _, p := range []struct {
		name   string
		q      float64
		target string
	}{{"p50", 0.5, ""}, {"p99", 0.99, "<= 2"}} {
		n, r := nodeqLat.pct(p.q), rawLat.pct(p.q)
		rows = append(rows, withTarget(Row{Name: fmt.Sprintf("external: publish-to-result latency %s at %.0f/s, %d workers", p.name, rate, sleepWorkers),
			Unit: "ms", Nodeq: n, Baseline: r, BaselineName: "raw Consume, Ack + reply publish"}, p.target, n <= 2*r))
	}
	mib := float64(rss) / (1 << 20)
	rows = append(rows, withTarget(Row{Name: fmt.Sprintf("external: consumer peak RSS, %d sleep-30s tasks pending, %d workers", plan.rssPending, sleepWorkers),
		Unit: "MiB", Nodeq: mib, Baseline: 64, BaselineName: "target"}, "< 64 MiB", mib < 64))
	return rows, nil
}

// external is a running nats-server process, the consumer binary to run
// against it, and the bench's connections to it.
type external struct {
	dir       string
	bin       string // the consumer binary
	url       string
	srv       *exec.Cmd
	srvLog    *tailWriter
	srvExited chan struct{}
	// b publishes tasks and reads the streams; its srv is nil (the
	// server is the process above), so b.close must not be called.
	b *bench
	// rawJS is the raw baseline's own connection, as a separate process would have.
	rawJS jetstream.JetStream
	// batches counts the task batches built, so that every task has an
	// ID of its own in the run.
	batches int
}

// taskMsgs is bench.taskMsgs with IDs "<batch>-<i>", new for every batch:
// purging a stream keeps its duplicate window (Nats-Msg-Id, 2 minutes), so
// a task with an ID published before would not be stored again. reply,
// if set, gives each task its reply_to.
func (x *external) taskMsgs(n int, nodeType string, params func(i int) task.Params, reply func(i int) string) ([]*nats.Msg, error) {
	x.batches++
	pub := queue.NewPublisher(x.b.js, x.b.names)
	msgs := make([]*nats.Msg, n)
	for i := range n {
		env := &task.Envelope{ID: strconv.Itoa(x.batches) + "-" + strconv.Itoa(i), NodeType: nodeType, Payload: payload}
		if params != nil {
			env.Params = params(i)
		}
		if reply != nil {
			env.ReplyTo = reply(i)
		}
		m, err := pub.Message(env)
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// startExternal builds nats-server and the consumer binary into dir,
// starts the server and runs the consumer binary once until it is ready,
// so that it sets up the streams and the durable consumer as it does for
// users.
func startExternal(ctx context.Context, dir string) (*external, error) {
	dir = filepath.Join(dir, "external")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin, err := buildConsumer(ctx, dir)
	if err != nil {
		return nil, err
	}
	srvBin := filepath.Join(dir, "nats-server")
	build := exec.CommandContext(ctx, "go", "build", "-o", srvBin, "github.com/nats-io/nats-server/v2")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build nats-server (run the bench inside the repository): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	x := &external{dir: dir, bin: bin, url: "nats://127.0.0.1:" + strconv.Itoa(port), srvLog: &tailWriter{}, srvExited: make(chan struct{})}
	x.srv = exec.CommandContext(ctx, srvBin, "-js", "-sd", filepath.Join(dir, "store"), "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	x.srv.Stdout, x.srv.Stderr = x.srvLog, x.srvLog
	if err := x.srv.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	go func() { _ = x.srv.Wait(); close(x.srvExited) }()
	ready := false
	defer func() {
		if !ready {
			x.close()
		}
	}()
	nc, err := x.connect(15 * time.Second)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	x.b = &bench{nc: nc, js: js, names: queue.DefaultNames()}
	rawNC, err := x.connect(5 * time.Second)
	if err != nil {
		return nil, err
	}
	if x.rawJS, err = jetstream.New(rawNC); err != nil {
		rawNC.Close()
		return nil, err
	}
	p, err := x.startConsumer(ctx, 4)
	if err != nil {
		return nil, fmt.Errorf("set up the streams with the consumer binary: %w", err)
	}
	p.kill()
	ready = true
	return x, nil
}

// connect connects to the server once it accepts clients and JetStream
// answers, within timeout.
func (x *external) connect(timeout time.Duration) (*nats.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		nc, err := nats.Connect(x.url, nats.Name("nodeq-bench"), nats.Timeout(time.Second))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			js, _ := jetstream.New(nc)
			_, err = js.AccountInfo(ctx)
			cancel()
			if err == nil {
				return nc, nil
			}
			nc.Close()
		}
		select {
		case <-x.srvExited:
			return nil, fmt.Errorf("nats-server exited (%v):\n%s", x.srv.ProcessState, x.srvLog.tail(20))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nats-server at %s not ready in %v: %w\n%s", x.url, timeout, err, x.srvLog.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close closes the connections and stops the server.
func (x *external) close() {
	if x.b != nil {
		x.b.nc.Close()
	}
	if x.rawJS != nil {
		x.rawJS.Conn().Close()
	}
	_ = x.srv.Process.Kill()
	<-x.srvExited
}

// extConsumer is a consumer binary started by the external mode.
type extConsumer struct {
	*consumerProc
	log *tailWriter
}

// startConsumer starts the consumer binary against the server with workers
// workers, metrics on a free port and otherwise its defaults (text logs at
// level info, kept only as a tail for error messages), and waits until it
// is ready. NODEQ_* and NATS_* variables of the bench's environment are not
// passed on: they would change the configuration.
func (x *external) startConsumer(ctx context.Context, workers int, env ...string) (*extConsumer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.CommandContext(ctx, x.bin, "--nats-url", x.url, "--metrics-addr", addr, "--workers", strconv.Itoa(workers))
	cmd.Dir = x.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODEQ_") && !strings.HasPrefix(kv, "NATS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	p := &extConsumer{consumerProc: &consumerProc{cmd: cmd, addr: addr, exited: make(chan struct{})}, log: &tailWriter{}}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the consumer: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.tail = p.log.tail(20)
		p.mu.Unlock()
		close(p.exited)
	}()
	if err := p.waitReady(30 * time.Second); err != nil {
		p.kill()
		return nil, fmt.Errorf("%w:\n%s", err, strings.Join(p.log.tail(20), "\n"))
	}
	return p, nil
}

// alive reports a consumer that exited.
func (p *extConsumer) alive() error {
	select {
	case <-p.exited:
		return p.died()
	default:
		return nil
	}
}

// succeeded reads how many tasks the consumer has run successfully.
func (p *extConsumer) succeeded() (float64, error) {
	m, err := p.metrics()
	if err != nil {
		return 0, err
	}
	return m.sum("nodeq_tasks_total", `outcome="succeeded"`), nil
}

// purge empties the task and dead-letter streams.
func (x *external) purge(ctx context.Context) error {
	for _, s := range []string{x.b.names.TaskStream, x.b.names.DLQStream} {
		st, err := x.b.js.Stream(ctx, s)
		if err != nil {
			return fmt.Errorf("stream %s: %w", s, err)
		}
		if err := st.Purge(ctx); err != nil {
			return fmt.Errorf("purge %s: %w", s, err)
		}
	}
	return nil
}

// drain purges the streams, pauses the durable consumer, publishes msgs
// (every PubAck checked), resumes the durable and returns the rate at
// which whatever consumes it (already running) emptied the task stream,
// timed from the resume. alive, if set, reports a consumer that stopped.
//
// The last task is published only after the resume: the server's resume
// does not wake a consumer whose pull requests already wait (nats-server
// 2.15: only a pause that runs out does), so they would not be served
// until the next pull request (up to consumer.pull_wait, 1s, for nodeq; 30s
// for a raw Consume), ack or stored message; that task's store is the
// wake-up.
func (x *external) drain(ctx context.Context, msgs []*nats.Msg, alive func() error) (float64, error) {
	if len(msgs) < 2 {
		return 0, fmt.Errorf("drain %d tasks: want at least 2", len(msgs))
	}
	names := x.b.names
	if err := x.purge(ctx); err != nil {
		return 0, err
	}
	if _, err := x.b.js.PauseConsumer(ctx, names.TaskStream, names.Consumer, time.Now().Add(time.Hour)); err != nil {
		return 0, fmt.Errorf("pause %s: %w", names.Consumer, err)
	}
	resumed := false
	defer func() {
		if !resumed { // never leave the durable paused for the next row
			_, _ = x.b.js.ResumeConsumer(context.Background(), names.TaskStream, names.Consumer)
		}
	}()
	last := msgs[len(msgs)-1]
	if err := x.b.publishChecked(ctx, msgs[:len(msgs)-1]); err != nil {
		return 0, fmt.Errorf("publish %d tasks: %w", len(msgs), err)
	}
	st, err := x.b.js.Stream(ctx, names.TaskStream)
	if err != nil {
		return 0, err
	}
	cons, err := st.Consumer(ctx, names.Consumer)
	if err != nil {
		return 0, err
	}
	if si := st.CachedInfo(); si.State.Msgs != uint64(len(msgs)-1) {
		return 0, fmt.Errorf("the task stream holds %d messages after publishing %d", si.State.Msgs, len(msgs)-1)
	}
	start := time.Now()
	if _, err := x.b.js.ResumeConsumer(ctx, names.TaskStream, names.Consumer); err != nil {
		return 0, fmt.Errorf("resume %s: %w", names.Consumer, err)
	}
	resumed = true
	if _, err := x.b.js.PublishMsg(ctx, last); err != nil {
		return 0, fmt.Errorf("publish the last task: %w", err)
	}
	deadline := start.Add(5 * time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if alive != nil {
			if err := alive(); err != nil {
				return 0, err
			}
		}
		si, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		if si.State.Msgs == 0 {
			ci, err := cons.Info(ctx)
			if err != nil {
				return 0, err
			}
			if ci.NumAckPending == 0 {
				return float64(len(msgs)) / time.Since(start).Seconds(), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d tasks left after %v; %s", si.State.Msgs, len(msgs), time.Since(start), x.b.queueState(ctx))
		}
	}
}

// drainNodeq times the consumer binary p over n tasks of nodeType and
// checks it ran every one successfully and dead-lettered none.
func (x *external) drainNodeq(ctx context.Context, p *extConsumer, n int, nodeType string, params func(int) task.Params) (float64, error) {
	msgs, err := x.taskMsgs(n, nodeType, params, nil)
	if err != nil {
		return 0, err
	}
	before, err := p.succeeded()
	if err != nil {
		return 0, err
	}
	rate, err := x.drain(ctx, msgs, p.alive)
	if err != nil {
		return 0, fmt.Errorf("%w\n%s", err, strings.Join(p.log.tail(10), "\n"))
	}
	// The count follows the ack by a moment.
	var ran float64
	if err := p.poll(5*time.Second, func(m metricsSnap) bool {
		ran = m.sum("nodeq_tasks_total", `outcome="succeeded"`) - before
		return ran >= float64(n)
	}); err != nil || ran != float64(n) {
		return 0, fmt.Errorf("%v of %d tasks succeeded (%v)\n%s", ran, n, err, strings.Join(p.log.tail(10), "\n"))
	}
	if st, err := x.b.js.Stream(ctx, x.b.names.DLQStream); err != nil || st.CachedInfo().State.Msgs != 0 {
		return 0, fmt.Errorf("the dead-letter stream is not empty: %v", err)
	}
	return rate, nil
}

// drainRaw times a raw jetstream Consume with async Ack on the durable
// consumer over n echo tasks.
func (x *external) drainRaw(ctx context.Context, n int) (float64, error) {
	msgs, err := x.taskMsgs(n, "echo", nil, nil)
	if err != nil {
		return 0, err
	}
	cons, err := x.rawJS.Consumer(ctx, x.b.names.TaskStream, x.b.names.Consumer)
	if err != nil {
		return 0, err
	}
	var count atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		count.Add(1)
	})
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	rate, err := x.drain(ctx, msgs, nil)
	if err != nil {
		return 0, err
	}
	return rate, waitCount(&count, int64(n), 5*time.Second)
}

// latency publishes echo tasks at rate for d, each with reply_to
// _INBOX.<nuid>.<i>, and returns for each the time from its publish until
// a reply arrives there: the consumer binary's result, with p running; or
// with p nil a raw Consume that acks and publishes a 2-byte reply to the
// same subject (it takes i from the task's Nats-Msg-Id, <batch>-<i>,
// rather than decoding the task: the broker's part only).
func (x *external) latency(ctx context.Context, rate float64, d time.Duration, p *extConsumer) (latencies, error) {
	if err := x.purge(ctx); err != nil {
		return nil, err
	}
	n := int(rate * d.Seconds())
	prefix := "_INBOX." + nuid.Next()
	msgs, err := x.taskMsgs(n, "echo", nil, func(i int) string { return prefix + "." + strconv.Itoa(i) })
	if err != nil {
		return nil, err
	}
	sent := make([]atomic.Int64, n) // publish time, unix nanos
	seen := make([]atomic.Bool, n)
	var mu sync.Mutex
	var lat latencies
	var count atomic.Int64
	sub, err := x.b.nc.Subscribe(prefix+".*", func(m *nats.Msg) {
		now := time.Now().UnixNano()
		i, err := strconv.Atoi(m.Subject[len(prefix)+1:])
		if err != nil || i < 0 || i >= n || seen[i].Swap(true) {
			return
		}
		mu.Lock()
		lat = append(lat, time.Duration(now-sent[i].Load()))
		mu.Unlock()
		count.Add(1)
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := x.b.nc.Flush(); err != nil {
		return nil, err
	}
	if p == nil {
		cons, err := x.rawJS.Consumer(ctx, x.b.names.TaskStream, x.b.names.Consumer)
		if err != nil {
			return nil, err
		}
		rawNC := x.rawJS.Conn()
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			id := m.Headers().Get(nats.MsgIdHdr)
			_ = rawNC.Publish(prefix+"."+id[strings.IndexByte(id, '-')+1:], []byte("ok"))
		})
		if err != nil {
			return nil, err
		}
		defer cc.Stop()
	}
	time.Sleep(100 * time.Millisecond) // the consumer's pull requests are waiting
	futs, err := publishPaced(x.b.js, msgs, rate, sent)
	if err != nil {
		return nil, err
	}
	if err := waitCount(&count, int64(n), 30*time.Second); err != nil {
		for _, f := range futs {
			select {
			case err := <-f.Err():
				return nil, fmt.Errorf("publish: %w", err)
			default:
			}
		}
		if p != nil {
			if err := p.alive(); err != nil {
				return nil, err
			}
		}
		return nil, fmt.Errorf("replies: %w; %s", err, x.b.queueState(ctx))
	}
	mu.Lock()
	defer mu.Unlock()
	return lat, nil
}

// consumerPeakRSS publishes pending sleep-30s tasks, starts a consumer binary with
// workers workers, waits until every worker holds a task, and returns the
// process's peak RSS read after (from its start).
func (x *external) consumerPeakRSS(ctx context.Context, workers, pending int, after time.Duration) (int64, error) {
	if err := x.purge(ctx); err != nil {
		return 0, err
	}
	msgs, err := x.taskMsgs(pending, "sleep", func(int) task.Params { return task.Params{"duration": "30s"} }, nil)
	if err != nil {
		return 0, err
	}
	if err := x.b.publishChecked(ctx, msgs); err != nil {
		return 0, fmt.Errorf("publish %d tasks: %w", pending, err)
	}
	msgs = nil
	start := time.Now()
	p, err := x.startConsumer(ctx, workers)
	if err != nil {
		return 0, err
	}
	defer p.kill()
	if err := p.poll(15*time.Second, func(m metricsSnap) bool { return int(m.get("nodeq_tasks_in_flight")) >= workers }); err != nil {
		return 0, fmt.Errorf("waiting for %d busy workers: %w; %s", workers, err, x.b.queueState(ctx))
	}
	time.Sleep(time.Until(start.Add(after)))
	if err := p.alive(); err != nil {
		return 0, err
	}
	return peakRSS(p.cmd.Process.Pid)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailWriter keeps the last few KiB written to it: a child process's log,
// for error messages, without storing all of it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

const tailKeep = 8 << 10

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > 4*tailKeep {
		t.buf = t.buf[:copy(t.buf, t.buf[len(t.buf)-tailKeep:])]
	}
	return len(b), nil
}

// tail returns the last n lines (the first may have lost its start).
func (t *tailWriter) tail(n int) []string {
	t.mu.Lock()
	s := string(t.buf)
	t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[max(0, len(lines)-n):]
}

// sleepLoopRate is how many 1ms sleeps workers goroutines complete per
// second on this machine, with nothing else to do: the bound a 1ms node
// can reach here, below workers/1ms by the timers' oversleep.
func sleepLoopRate(workers int, d time.Duration) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				time.Sleep(time.Millisecond)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}
