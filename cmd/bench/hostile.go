package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	nconfig "github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// The worst-case memory mode (--hostile-memory) runs the consumer binary,
// as users run it, against the bench's server while every worker holds a
// task of the largest size the consumer accepts, and checks its peak RSS
// against the stated bound
//
//	peak RSS ≤ base + hostileK × held + prefetchK × prefetched
//	held       = min(workers × task size, consumer.max_inflight_bytes)
//	prefetched = min(prefetch × task size, consumer.max_inflight_bytes − held)
//
// where base is the peak RSS of the same binary, idle, in the same run. A
// prefetched task is not decoded until a worker takes it: it keeps only its
// message, and the collector's doubling (prefetchK = 2).
// A task held by a worker keeps, per byte of task: the message (1) and what
// decoding it retains (at most 2 × its size + 1.5 MiB, docs/wire-format.md:
// 3.55 at 992 KiB; 2.31 for the worst accepted task known); a task being
// dead-lettered adds its record (1.01). That is at most 5.56 bytes live per
// byte held. The Go collector (GOGC=100) lets the heap grow to twice what
// it found live at its last cycle, and under churn that includes what was
// allocated or freed while it ran: 11.1, rounded up with that slack, 12.
// Measured (docs/benchmarks.md): workers that only hold their tasks need
// 3.5-4.9; 64 workers dead-lettering without a pause up to 10.2.
const hostileK = 12

// prefetchK is the bound's bytes per byte of a prefetched task (see above).
const prefetchK = 2

// maxTaskSize is the largest task the consumer accepts with the server's
// default max_payload of 1 MiB: streams.max_msg_size 0 (automatic).
var maxTaskSize = int(dlq.MaxTaskSize(1 << 20))

// memCase is one configuration of the worst-case memory mode.
type memCase struct {
	workers int
	budget  int64  // consumer.max_inflight_bytes; 0: the default
	hostile bool   // params at task.MaxParamValues of the costliest value, else a plain payload
	fail    bool   // every task is dead-lettered (fault), else every worker holds one (sleep 30s)
	tasks   int    // published before the consumer starts; 0: idle, the base
	label   string // what the row is for
}

// memCases are the cases of the mode, idle (the base) first.
func memCases() []memCase {
	var cs []memCase
	cs = append(cs, memCase{workers: 4, label: "idle: the base"})
	for _, c := range []struct {
		workers int
		budget  int64
		label   string
	}{{nconfig.DefaultWorkers, 0, "(a) defaults"}, {64, 0, "(b) 64 workers"}, {64, 16 << 20, "(c) 64 workers, 16 MiB"}} {
		for _, hostile := range []bool{true, false} {
			// Enough for every worker and the whole prefetch, and more.
			cs = append(cs, memCase{workers: c.workers, budget: c.budget, hostile: hostile, tasks: c.workers + nconfig.DefaultPrefetch + 16, label: c.label})
		}
	}
	for _, hostile := range []bool{true, false} {
		cs = append(cs, memCase{workers: 64, hostile: hostile, fail: true, tasks: 640, label: "(d) 64 workers, all dead-lettered"})
	}
	return cs
}

// MemRow is one measured case of the worst-case memory mode.
type MemRow struct {
	Case     string `json:"case"`
	Tasks    string `json:"tasks"` // hostile or benign, held (sleep) or dead-lettered (fault)
	Workers  int    `json:"workers"`
	Budget   int64  `json:"max_inflight_bytes"`
	TaskSize int64  `json:"task_bytes"`
	// Held is the most tasks in flight at once (nodeq_tasks_in_flight),
	// HeldBytes the nodeq_inflight_bytes read then.
	Held      int   `json:"held"`
	HeldBytes int64 `json:"inflight_bytes"`
	PeakRSS   int64 `json:"peak_rss_bytes"`
	// HeapInuse is the Go heap in use at the end (go_memstats_heap_inuse_bytes).
	HeapInuse int64 `json:"heap_inuse_bytes"`
	// Bound is base + hostileK × held + prefetchK × prefetched (see
	// hostileK); 0 for the base.
	Bound int64 `json:"bound_bytes"`
	// K is (peak RSS - base - prefetchK × prefetched) / held: the k this case needs.
	K float64 `json:"k"`
}

// buildConsumer builds cmd/consumer into dir and returns the binary's path.
func buildConsumer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "consumer")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/nodeq/nodeq/cmd/consumer")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build consumer (run the bench inside the repository): %w", err)
	}
	return bin, nil
}

// hostileMemory measures every case with the consumer binary built in dir.
func (b *bench) hostileMemory(ctx context.Context, dir string, cases []memCase, progress io.Writer) ([]MemRow, error) {
	bin, err := buildConsumer(ctx, dir)
	if err != nil {
		return nil, err
	}
	var rows []MemRow
	var base int64
	for _, c := range cases {
		fmt.Fprintf(progress, "measuring worst-case memory: %s, %s...\n", c.label, c.kind())
		r, err := b.memCase(ctx, bin, dir, c)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", c.label, c.kind(), err)
		}
		if c.tasks == 0 {
			base = r.PeakRSS
		} else if base > 0 {
			held := min(int64(c.workers)*r.TaskSize, r.Budget)
			prefetched := min(int64(nconfig.DefaultPrefetch)*r.TaskSize, r.Budget-held)
			r.Bound = base + hostileK*held + prefetchK*prefetched
			r.K = float64(r.PeakRSS-base-prefetchK*prefetched) / float64(held)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (c memCase) kind() string {
	switch {
	case c.tasks == 0:
		return "no tasks"
	case c.hostile && c.fail:
		return "hostile, dead-lettered"
	case c.hostile:
		return "hostile, held"
	case c.fail:
		return "benign, dead-lettered"
	}
	return "benign, held"
}

// memCase publishes the case's tasks, runs the consumer until every task
// it can hold is held (or every task is dead-lettered), and reads its peak RSS.
func (b *bench) memCase(ctx context.Context, bin, dir string, c memCase) (MemRow, error) {
	size := maxTaskSize
	budget := c.budget
	if budget == 0 {
		budget = nconfig.DefaultMaxInflightBytes
	}
	row := MemRow{Case: c.label, Tasks: c.kind(), Workers: c.workers, Budget: budget, TaskSize: int64(size)}
	// The task stream as the consumer sets it up by default: it refuses
	// any task larger than maxTaskSize.
	if _, err := b.resetWith(ctx, queue.StreamOptions{DLQMaxBytes: 8 << 30, MaxMsgSize: int32(maxTaskSize)}); err != nil {
		return row, err
	}
	nodeType, params := "sleep", [][2]string{{"duration", "30s"}}
	if c.fail {
		nodeType, params = "fault", [][2]string{{"kind", "Manifest"}}
	}
	msgs := make([]*nats.Msg, c.tasks)
	for i := range msgs {
		m, err := sizedTask(b.names, "h"+strconv.Itoa(i), nodeType, size, c.hostile, params)
		if err != nil {
			return row, err
		}
		msgs[i] = m
	}
	if err := b.publishChecked(ctx, msgs); err != nil {
		return row, fmt.Errorf("publish %d tasks of %d bytes: %w", c.tasks, size, err)
	}
	msgs = nil
	env := []string{"NODEQ_CONSUMER_MAX_INFLIGHT_BYTES=" + strconv.FormatInt(budget, 10)}
	p, err := startConsumer(ctx, bin, dir, b.srv.ClientURL(), c.workers, env)
	if err != nil {
		return row, err
	}
	defer p.kill()
	var last metricsSnap
	switch {
	case c.tasks == 0:
		err = p.waitReady(15 * time.Second)
		time.Sleep(time.Second)
	case c.fail:
		// Until every task is dead-lettered.
		err = p.poll(60*time.Second, func(m metricsSnap) bool {
			last = m
			if h := int(m.get("nodeq_tasks_in_flight")); h > row.Held {
				row.Held, row.HeldBytes = h, int64(m.get("nodeq_inflight_bytes"))
			}
			return int(m.sum("nodeq_tasks_total", `outcome="dead_lettered"`)) >= c.tasks
		})
	default:
		// Until the tasks held have not changed for 1.5s.
		var since time.Time
		err = p.poll(30*time.Second, func(m metricsSnap) bool {
			last = m
			h, hb := int(m.get("nodeq_tasks_in_flight")), int64(m.get("nodeq_inflight_bytes"))
			if h != row.Held || hb != row.HeldBytes {
				row.Held, row.HeldBytes, since = h, hb, time.Now()
			}
			return h > 0 && time.Since(since) >= 1500*time.Millisecond
		})
	}
	if err != nil {
		return row, fmt.Errorf("%w; %s", err, b.queueState(ctx))
	}
	if last == nil {
		if last, err = p.metrics(); err != nil {
			return row, err
		}
	}
	row.HeapInuse = int64(last.get("go_memstats_heap_inuse_bytes"))
	if n := last.sum("nodeq_tasks_total", `outcome="dead_lettered"`); !c.fail && n > 0 {
		return row, fmt.Errorf("%v tasks were dead-lettered; the case wants them held", n)
	}
	row.PeakRSS, err = peakRSS(p.cmd.Process.Pid)
	return row, err
}

// queueState says what the task stream and the durable consumer hold.
func (b *bench) queueState(ctx context.Context) string {
	st, err := b.js.Stream(ctx, b.names.TaskStream)
	if err != nil {
		return err.Error()
	}
	cons, err := st.Consumer(ctx, b.names.Consumer)
	if err != nil {
		return err.Error()
	}
	si, ci := st.CachedInfo(), cons.CachedInfo()
	return fmt.Sprintf("task stream: %d messages; consumer: %d pending, %d ack pending, %d redelivered, %d waiting pulls",
		si.State.Msgs, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
}

// publishChecked publishes msgs 32 at a time and checks every PubAck: the
// server refuses publishes (429, too many requests) when too many bytes
// wait to be stored, so a refused or failed one is retried, synchronously,
// after a pause; Nats-Msg-Id keeps a task stored after all from being
// stored twice.
func (b *bench) publishChecked(ctx context.Context, msgs []*nats.Msg) error {
	const window = 32
	for len(msgs) > 0 {
		batch := msgs[:min(window, len(msgs))]
		msgs = msgs[len(batch):]
		futs := make([]jetstream.PubAckFuture, len(batch))
		for i, m := range batch {
			f, err := b.js.PublishMsgAsync(m)
			if err != nil {
				return err
			}
			futs[i] = f
		}
		for i, f := range futs {
			var err error
			select {
			case <-f.Ok():
				continue
			case err = <-f.Err():
			case <-ctx.Done():
				return ctx.Err()
			}
			for try := 1; err != nil; try++ {
				if try > 5 {
					return fmt.Errorf("task %s: %w", batch[i].Header.Get(nats.MsgIdHdr), err)
				}
				time.Sleep(time.Duration(try) * 100 * time.Millisecond)
				_, err = b.js.PublishMsg(ctx, batch[i])
			}
		}
	}
	return nil
}

// sizedTask returns a msgpack task message of exactly size bytes, headers
// and body together (as a stream's max_msg_size counts them): {id,
// node_type, payload, params}, params holding the given string entries
// and, when hostile, "a": as many one-entry maps {"": {}} (the costliest
// value per byte to decode) as task.MaxParamValues allows. A binary
// payload of 'x' fills the rest.
func sizedTask(names queue.Names, id, nodeType string, size int, hostile bool, params [][2]string) (*nats.Msg, error) {
	str := func(b []byte, s string) []byte {
		if len(s) > 31 {
			panic("sizedTask: string too long for a fixstr: " + s)
		}
		return append(append(b, 0xa0|byte(len(s))), s...)
	}
	values := 1 + 2*len(params) // the params map, its keys and their string values
	entries := len(params)
	n := 0
	if hostile {
		entries++
		values += 2 // "a" and its array
		n = (task.MaxParamValues - values) / 3
		values += 3 * n
	}
	p := []byte{0x80 | byte(entries)}
	if hostile {
		p = append(str(p, "a"), 0xdd, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(p[len(p)-4:], uint32(n))
		for range n {
			p = append(p, 0x81, 0xa0, 0x80)
		}
	}
	for _, kv := range params {
		p = str(str(p, kv[0]), kv[1])
	}
	h := nats.Header{queue.HeaderContentType: {task.ContentTypeMsgpack}, queue.HeaderMsgID: {id}}
	hdrLen := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			hdrLen += len(k) + len(": \r\n") + len(v)
		}
	}
	head := str(str(str(str(str([]byte{0x84}, "id"), id), "node_type"), nodeType), "payload")
	head = append(head, 0xc6, 0, 0, 0, 0)
	tail := append(str(nil, "params"), p...)
	fill := size - hdrLen - len(head) - len(tail)
	if fill < 0 {
		return nil, fmt.Errorf("a task of %d bytes cannot hold its params (%d bytes)", size, len(tail))
	}
	binary.BigEndian.PutUint32(head[len(head)-4:], uint32(fill))
	data := make([]byte, 0, len(head)+fill+len(tail))
	data = append(data, head...)
	data = append(data, strings.Repeat("x", fill)...)
	data = append(data, tail...)
	// The consumer must accept it: within the cap, and a valid task.
	env, err := task.DecodeMsgpack(data)
	if err == nil {
		err = env.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("the bench's task is not accepted: %w", err)
	}
	if values > task.MaxParamValues || hostile && values+3 <= task.MaxParamValues {
		return nil, fmt.Errorf("params hold %d values, want the most of %d", values, task.MaxParamValues)
	}
	return &nats.Msg{Subject: names.TaskSubject(nodeType), Data: data, Header: h}, nil
}

// consumerProc is a running consumer binary with its metrics listener.
type consumerProc struct {
	cmd    *exec.Cmd
	addr   string        // the metrics listener, host:port
	exited chan struct{} // closed when the process has exited
	mu     sync.Mutex
	tail   []string // its last log lines
}

// startConsumer starts the consumer binary against url with workers
// workers, JSON logs at level info and metrics on a free port, which it
// reads from the log.
func startConsumer(ctx context.Context, bin, dir, url string, workers int, env []string) (*consumerProc, error) {
	cmd := exec.CommandContext(ctx, bin, "--nats-url", url, "--workers", strconv.Itoa(workers),
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "info")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &consumerProc{cmd: cmd, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "metrics listening" {
				addr <- l.Addr
			}
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.addr = <-addr:
		return p, nil
	case <-p.exited:
		return nil, p.died()
	case <-time.After(15 * time.Second):
		p.kill()
		return nil, fmt.Errorf("the consumer did not report its metrics address in 15s: %s", p.logTail())
	}
}

func (p *consumerProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *consumerProc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *consumerProc) died() error {
	return fmt.Errorf("the consumer exited (%v):\n%s", p.cmd.ProcessState, p.logTail())
}

// waitReady waits until /readyz answers 200.
func (p *consumerProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return p.died()
		default:
		}
		if resp, err := http.Get("http://" + p.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the consumer was not ready in %v", timeout)
}

// poll reads the metrics every 50ms until done returns true.
func (p *consumerProc) poll(timeout time.Duration, done func(metricsSnap) bool) error {
	deadline := time.Now().Add(timeout)
	var last metricsSnap
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return p.died()
		default:
		}
		m, err := p.metrics()
		if err == nil {
			last = m
			if done(m) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not done after %v: in flight %v, inflight bytes %v, outcomes %v", timeout,
		last.get("nodeq_tasks_in_flight"), last.get("nodeq_inflight_bytes"), last.sum("nodeq_tasks_total", ""))
}

// metricsSnap is one scrape: value by series ("name{labels}").
type metricsSnap map[string]float64

func (p *consumerProc) metrics() (metricsSnap, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := metricsSnap{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// get returns the value of a series without labels.
func (m metricsSnap) get(name string) float64 { return m[name] }

// sum adds up the series of a metric whose labels contain label.
func (m metricsSnap) sum(name, label string) float64 {
	var s float64
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, name+"{"); ok && strings.Contains(rest, label) {
			s += v
		}
	}
	return s
}

// printMemTable writes the worst-case memory table.
func printMemTable(w io.Writer, rows []MemRow) {
	mib := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }
	fmt.Fprintf(w, "\nworst-case memory: the consumer binary, tasks of %d bytes (%s MiB), bound = base + %d × held + %d × prefetched\n\n",
		maxTaskSize, mib(int64(maxTaskSize)), hostileK, prefetchK)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\ttasks\tworkers\tmax_inflight MiB\theld\tinflight MiB\tpeak RSS MiB\theap inuse MiB\tbound MiB\tk needed\t")
	for _, r := range rows {
		bound, k := "", ""
		if r.Bound > 0 {
			bound = mib(r.Bound)
			if r.PeakRSS > r.Bound {
				bound += " MISSED"
			}
			k = fmt.Sprintf("%.2f", r.K)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Case, r.Tasks, r.Workers, mib(r.Budget), r.Held, mib(r.HeldBytes),
			mib(r.PeakRSS), mib(r.HeapInuse), bound, k)
	}
	tw.Flush()
}
