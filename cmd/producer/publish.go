package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// defaultWaitTimeout is how long publish --wait waits for a result when
// --timeout is not given. It must be longer than a failing task takes to
// reach its outcome under the consumers' default retry schedule
// (retryScheduleWait of the defaults: 35.9s of backoffs and redelivery
// delays, plus nine runs of its node); TestDefaultWaitOutlastsTheSchedule
// keeps the two apart.
const defaultWaitTimeout = time.Minute

// retryScheduleWait is how long a task that fails every attempt with a
// transient error waits in all, before it is dead-lettered, under retry
// policy p and redelivery policy r: every in-process backoff of each
// delivery, and the delay before each redelivery. The runs of its node,
// and the time a consumer takes to pull it again, come on top. With
// jitter it is one draw of the policy.
func retryScheduleWait(p resilience.Policy, r resilience.Redelivery) time.Duration {
	var total time.Duration
	for delivery := 1; ; delivery++ {
		for attempt := 1; ; attempt++ {
			d, again := p.NextRetry(attempt)
			if !again {
				break
			}
			total += d
		}
		d, again := r.Next(delivery)
		if !again {
			return total
		}
		total += d
	}
}

// publishCommand publishes one task, or every task of a JSON Lines file.
type publishCommand struct {
	*app
	args          []string
	payloadFile   string
	file          string
	id            string
	nodeID        string
	correlationID string
	params        []string
	deadline      time.Duration
	wait          bool
	timeout       time.Duration
	timeoutSet    func() bool // whether --timeout was given
	jsonOut       bool
	quiet         bool
	window        int

	// ackTimeout is how long a task waits for its PubAck: --timeout, or
	// with --wait at most queue.DefaultAckTimeout (validate sets it).
	ackTimeout time.Duration
	// task is the single task validate builds; run adds its payload.
	task *task.Envelope
}

func publishCmd(a *app) *cobra.Command {
	c, cmd := newPublishCommand(a)
	return a.bind(cmd, c)
}

// newPublishCommand makes the command and its cobra.Command, flags
// registered, not yet bound.
func newPublishCommand(a *app) (*publishCommand, *cobra.Command) {
	c := &publishCommand{app: a}
	cmd := &cobra.Command{
		Use:   "publish NODE_TYPE [PAYLOAD] | publish --file TASKS.jsonl",
		Short: "Publish one task, or many from a JSON Lines file",
		Long: `Publish one task of NODE_TYPE with PAYLOAD (an argument, --payload-file FILE, or
--payload-file - for stdin), optionally waiting for its result with --wait.

With --file, publish every line of a JSON Lines file ('-' for stdin); each line is a
task envelope in the JSON wire format (docs/wire-format.md), e.g.
  {"node_type":"echo","payload":{"text":"hi"}}
A missing "id" is generated. Lines that are not valid envelopes are reported and counted
as failed; the rest are published.`,
		Example: `  producer publish echo '{"text":"hi"}' --wait
  producer publish sleep --param duration=2s
  producer publish echo --payload-file payload.json --node-id n7
  producer publish --file tasks.jsonl`,
	}
	fl := cmd.Flags()
	fl.StringVar(&c.payloadFile, "payload-file", "", "read the payload from FILE ('-' for stdin)")
	fl.StringVarP(&c.file, "file", "f", "", "publish every task of a JSON Lines FILE ('-' for stdin)")
	fl.StringVar(&c.id, "id", "", "task ID (default: generated); a re-publish with the same ID within 2 minutes is dropped as a duplicate")
	fl.StringVar(&c.nodeID, "node-id", "", "node ID in your pipeline")
	fl.StringVar(&c.correlationID, "correlation-id", "", "pipeline/correlation ID")
	fl.StringArrayVarP(&c.params, "param", "p", nil, "node parameter KEY=VALUE (repeatable); VALUE is JSON if it parses, else a string")
	fl.DurationVar(&c.deadline, "deadline", 0, "give up on the task if it has not run within this duration (e.g. 30s)")
	fl.BoolVar(&c.wait, "wait", false, "wait for the task's result and print its output")
	fl.DurationVar(&c.timeout, "timeout", 0, fmt.Sprintf("with --wait, how long to wait for the result after the PubAck (default %v: a failing task waits %v "+
		"under the consumers' default retry schedule, plus its node's runs; the PubAck waits at most %v); "+
		"without --wait, how long each task may wait for JetStream to confirm it with its PubAck (default %v)",
		defaultWaitTimeout, retryScheduleWait(resilience.DefaultPolicy(), resilience.DefaultRedelivery()), queue.DefaultAckTimeout, queue.DefaultAckTimeout))
	c.timeoutSet = func() bool { return fl.Changed("timeout") }
	fl.BoolVar(&c.jsonOut, "json", false, "print the whole result (with --wait) or the publish acknowledgement as JSON")
	fl.BoolVarP(&c.quiet, "quiet", "q", false, "no progress bar with --file")
	fl.IntVar(&c.window, "window", 256, "with --file, how many publishes may await their acknowledgement at once")
	return c, cmd
}

func (c *publishCommand) setArgs(args []string) { c.args = args }

func (c *publishCommand) validate() error {
	switch {
	case c.timeoutSet() && c.timeout <= 0:
		return usagef("--timeout %v: want a positive duration, e.g. 30s", c.timeout)
	case !c.timeoutSet() && c.wait:
		c.timeout = defaultWaitTimeout
	case !c.timeoutSet():
		c.timeout = queue.DefaultAckTimeout
	}
	// A PubAck that takes longer than queue.DefaultAckTimeout means no
	// stream or a stuck server, not a slow task: --wait's longer timeout
	// is for the result.
	c.ackTimeout = c.timeout
	if c.wait {
		c.ackTimeout = min(c.timeout, queue.DefaultAckTimeout)
	}
	if c.window <= 0 {
		return usagef("--window %d: want 1 or more", c.window)
	}
	if c.deadline < 0 {
		return usagef("--deadline %v: want a positive duration, e.g. 30s", c.deadline)
	}
	if c.file != "" {
		switch {
		case len(c.args) != 0:
			return usagef("--file takes no NODE_TYPE or PAYLOAD arguments")
		case c.wait:
			return usagef("--wait works with a single task, not --file")
		case c.payloadFile != "" || c.id != "" || c.nodeID != "" || c.correlationID != "" || len(c.params) > 0 || c.deadline != 0:
			return usagef("--payload-file, --id, --node-id, --correlation-id, --param and --deadline make a single task; with --file each line is a whole task")
		}
		return nil
	}
	if len(c.args) < 1 || len(c.args) > 2 {
		return usagef("want NODE_TYPE [PAYLOAD], or --file TASKS.jsonl")
	}
	if len(c.args) == 2 && c.payloadFile != "" {
		return usagef("give the payload as an argument or with --payload-file, not both")
	}
	t := &task.Envelope{ID: c.id, NodeType: c.args[0], NodeID: c.nodeID, CorrelationID: c.correlationID}
	if err := (&task.Envelope{ID: "x", NodeType: t.NodeType}).Validate(); err != nil {
		return &usageError{err}
	}
	if len(c.params) > 0 {
		t.Params = task.Params{}
		for _, p := range c.params {
			k, v, ok := strings.Cut(p, "=")
			if !ok || k == "" {
				return usagef("--param %q: want KEY=VALUE", p)
			}
			var val any
			if err := json.Unmarshal([]byte(v), &val); err != nil {
				val = v
			}
			t.Params[k] = val
		}
	}
	c.task = t
	return nil
}

func (c *publishCommand) run(ctx context.Context) error {
	if c.file != "" {
		return c.publishFile(ctx)
	}
	env := c.task
	switch {
	case len(c.args) == 2:
		env.Payload = []byte(c.args[1])
	case c.payloadFile == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return fmt.Errorf("read payload from stdin: %w", err)
		}
		env.Payload = b
	case c.payloadFile != "":
		b, err := os.ReadFile(c.payloadFile)
		if err != nil {
			return fmt.Errorf("read payload: %w", err)
		}
		env.Payload = b
	}
	if c.deadline > 0 {
		env.Deadline = time.Now().Add(c.deadline).UTC()
	}
	return c.publishOne(ctx, env)
}

func (c *publishCommand) publishOne(ctx context.Context, env *task.Envelope) error {
	nc, js, err := c.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	var replies chan *nats.Msg
	if c.wait {
		env.ReplyTo = nc.NewInbox()
		replies = make(chan *nats.Msg, 1)
		sub, err := nc.ChanSubscribe(env.ReplyTo, replies)
		if err != nil {
			return fmt.Errorf("subscribe to the reply subject: %w", err)
		}
		defer sub.Unsubscribe()
	}
	pctx, cancel := context.WithTimeout(ctx, c.ackTimeout)
	defer cancel()
	ack, err := queue.NewPublisher(js, c.names).Publish(pctx, env)
	if err != nil {
		return c.explainPublishError(err)
	}
	if ack.Duplicate {
		fmt.Fprintf(c.stderr, "warning: task %s was already published within the stream's duplicate window; JetStream kept the first copy\n", env.ID)
	}
	if !c.wait {
		if c.jsonOut {
			return json.NewEncoder(c.stdout).Encode(map[string]any{"task_id": env.ID, "stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate})
		}
		fmt.Fprintf(c.stdout, "published task %s to %s (stream %s, seq %d)\n", env.ID, c.names.TaskSubject(env.NodeType), ack.Stream, ack.Sequence)
		return nil
	}
	fmt.Fprintf(c.stderr, "published task %s (seq %d); waiting up to %v for its result\n", env.ID, ack.Sequence, c.timeout)
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case m := <-replies:
		res, err := task.DecodeResult(m.Data, m.Header.Get(queue.HeaderContentType))
		if err != nil {
			return err
		}
		return c.printResult(res)
	case <-timer.C:
		hint := fleetHint(ctx, js, c.names, env.NodeType)
		return fmt.Errorf("%w for task %s within %v; %s", errNoResult, env.ID, c.timeout, hint)
	case <-ctx.Done():
		return fmt.Errorf("interrupted while waiting for task %s; it stays queued", env.ID)
	}
}

func (c *publishCommand) printResult(res *task.Result) error {
	if c.jsonOut {
		b, err := task.EncodeResult(res, true)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, string(cleanJSON(b)))
	} else if res.OK {
		_, _ = c.stdout.Write(res.Output)
		if len(res.Output) > 0 && res.Output[len(res.Output)-1] != '\n' {
			fmt.Fprintln(c.stdout)
		}
	}
	if !res.OK {
		// The error is the node's (an HTTP body, a process's stderr): escape
		// it as dlq list and show do, before main prints it to the terminal.
		return fmt.Errorf("task %s failed (%s) after %d attempt(s) on %s: %s; it was dead-lettered",
			clean(res.TaskID), clean(res.ErrorKind), res.Attempts, clean(res.Worker), clean(res.Error))
	}
	return nil
}

func (c *publishCommand) explainPublishError(err error) error {
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: no stream stores %s.>; start a consumer once (it creates the streams) or check --task-prefix", err, c.names.TaskPrefix)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s", err, noPubAckHint(c.ackTimeout, c.names.TaskPrefix))
	}
	return err
}

// noPubAckHint explains a publish that JetStream did not answer in time: no
// stream stores the subject (while something else subscribes to it, so the
// server does not answer "no responders" either), or the server is stuck.
func noPubAckHint(timeout time.Duration, prefix string) string {
	return fmt.Sprintf("no PubAck within %v: is there a stream for %s.>? start a consumer first (it creates the streams), "+
		"or raise --timeout if the server is only slow", timeout, prefix)
}

// summary counts a bulk publish. Every task read is counted once.
type summary struct {
	// published and duplicates were confirmed by JetStream (duplicates: a
	// copy with the same ID was already stored).
	published, duplicates int
	// failed are not stored: invalid lines, tasks JetStream refused.
	failed int
	// unconfirmed were sent without an answer (no PubAck in time, the
	// connection lost, interrupted): they may or may not be stored.
	// unconfirmedErr is the first one's error.
	unconfirmed    int
	unconfirmedErr error
	// notSent were read after the first PubAck timeout and not published.
	notSent int
	elapsed time.Duration
}

// line is the summary's first line, on stdout.
func (s summary) line() string {
	rate := float64(s.published) / max(s.elapsed.Seconds(), 1e-9)
	notSent := ""
	if s.notSent > 0 {
		notSent = fmt.Sprintf(", not sent %d", s.notSent)
	}
	return fmt.Sprintf("published %d, duplicates %d, failed %d, not confirmed %d%s in %v (%.0f tasks/s)",
		s.published, s.duplicates, s.failed, s.unconfirmed, notSent, s.elapsed.Round(time.Millisecond), rate)
}

// err is what the command fails with: how many tasks were not confirmed
// and why, or nil when JetStream confirmed every task read.
func (s summary) err(timeout time.Duration, prefix string) error {
	total := s.published + s.duplicates + s.failed + s.unconfirmed + s.notSent
	var parts []string
	if s.unconfirmed > 0 {
		why := "no answer"
		switch {
		case errors.Is(s.unconfirmedErr, jetstream.ErrAsyncPublishTimeout):
			why = noPubAckHint(timeout, prefix)
		case s.unconfirmedErr != nil:
			why = s.unconfirmedErr.Error()
		}
		parts = append(parts, fmt.Sprintf("%d of %d tasks not confirmed: %s; they may or may not be stored: publishing them again "+
			"with the same ids is safe within the stream's duplicate window (2 minutes by default)", s.unconfirmed, total, why))
	}
	if s.notSent > 0 {
		parts = append(parts, fmt.Sprintf("%d not sent: publishing stopped at the first PubAck timeout", s.notSent))
	}
	if s.failed > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d tasks were not published", s.failed, total))
	}
	if len(parts) == 0 {
		return nil
	}
	return errors.New(strings.Join(parts, "; "))
}

func (c *publishCommand) publishFile(ctx context.Context) error {
	var r io.Reader = c.stdin
	total := int64(-1)
	if c.file != "-" {
		fh, err := os.Open(c.file)
		if err != nil {
			return err
		}
		defer fh.Close()
		if total, err = countLines(c.file); err != nil {
			return err
		}
		r = fh
	}
	// nats.go forgets a publish it has no PubAck for after c.ackTimeout too,
	// instead of holding it until the connection closes.
	nc, js, err := c.connect(jetstream.WithPublishAsyncTimeout(c.ackTimeout))
	if err != nil {
		return err
	}
	defer nc.Close()

	show := !c.quiet && isTerminal(c.stderr)
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(c.stderr), progressbar.OptionSetVisibility(show),
		progressbar.OptionSetDescription("publishing"), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tasks"), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	pub := queue.NewPublisher(js, c.names).WithAckTimeout(c.ackTimeout)
	s, err := bulkPublish(ctx, pub, r, c.window, func(o queue.Outcome, lineErr error) {
		_ = bar.Add(1)
		switch {
		case lineErr != nil:
			_ = bar.Clear()
			fmt.Fprintf(c.stderr, "%s: %v\n", c.file, lineErr)
		case o.Unconfirmed:
			_ = bar.Clear()
			fmt.Fprintf(c.stderr, "task %s: not confirmed: %v\n", o.Task.ID, o.Err)
		case o.Err != nil:
			_ = bar.Clear()
			fmt.Fprintf(c.stderr, "task %s: %v\n", o.Task.ID, c.explainPublishError(o.Err))
		}
	})
	_ = bar.Finish()
	fmt.Fprintln(c.stdout, s.line())
	if serr := s.err(c.ackTimeout, c.names.TaskPrefix); serr != nil {
		return serr
	}
	return err
}

// bulkPublish publishes every envelope of a JSON Lines reader and reports
// each line's outcome. After the first PubAck timeout it sends no more
// tasks: it reads the rest and counts them as not sent. Lines are read and
// outcomes reported on two goroutines: mu keeps s and report to one at a time.
func bulkPublish(ctx context.Context, pub *queue.Publisher, r io.Reader, window int, report func(o queue.Outcome, lineErr error)) (summary, error) {
	var s summary
	var mu sync.Mutex
	var stop atomic.Bool // set on the first PubAck timeout
	start := time.Now()
	tasks := func(yield func(*task.Envelope) bool) {
		for env, err := range task.ReadLines(r, 0) {
			if err != nil {
				mu.Lock()
				s.failed++
				report(queue.Outcome{}, err)
				mu.Unlock()
				continue
			}
			if stop.Load() {
				mu.Lock()
				s.notSent++
				mu.Unlock()
				continue
			}
			if !yield(env) {
				return
			}
		}
	}
	err := pub.PublishAll(ctx, tasks, window, func(o queue.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case o.Unconfirmed:
			s.unconfirmed++
			if s.unconfirmedErr == nil {
				s.unconfirmedErr = o.Err
			}
			if errors.Is(o.Err, jetstream.ErrAsyncPublishTimeout) {
				stop.Store(true)
			}
		case o.Err != nil:
			s.failed++
		case o.Ack.Duplicate:
			s.duplicates++
		default:
			s.published++
		}
		report(o, nil)
	})
	s.elapsed = time.Since(start)
	return s, err
}

func countLines(path string) (int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	var n int64
	buf := make([]byte, 256<<10)
	last := byte('\n')
	for {
		k, err := fh.Read(buf)
		for _, b := range buf[:k] {
			if b == '\n' {
				n++
			}
		}
		if k > 0 {
			last = buf[k-1]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != '\n' {
		n++
	}
	return n, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
