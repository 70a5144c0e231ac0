package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// ProcessConfig configures a process node. The command comes from the
// operator's configuration, never from a task.
type ProcessConfig struct {
	// Command is the program and its arguments; no shell is involved.
	Command []string
	// Dir is the working directory; empty means the consumer's.
	Dir string
	// Env sets variables for the child. The child's environment holds only
	// these, the variables named in PassEnv, and the NODEQ_* task variables.
	Env map[string]string
	// PassEnv names variables copied from the consumer's environment (e.g. PATH).
	PassEnv []string
	// MaxOutput caps captured stdout in bytes; more is an error. 0 means 16 MiB.
	MaxOutput int
	// KillGrace is how long the process group gets after SIGTERM on timeout
	// before SIGKILL. 0 means 2s. Processes a run leaves behind after the
	// command exits on its own get SIGKILL at once.
	KillGrace time.Duration
}

// Exit codes of the process protocol (from sysexits.h), and the kinds they map to.
const (
	ExitUsage       = 64 // EX_USAGE -> Manifest
	ExitDataErr     = 65 // EX_DATAERR -> Marshaling
	ExitUnavailable = 69 // EX_UNAVAILABLE -> Transport
	ExitIOErr       = 74 // EX_IOERR -> Io
	ExitTempFail    = 75 // EX_TEMPFAIL -> Execution
	ExitConfig      = 78 // EX_CONFIG -> Manifest
)

// ErrorLinePrefix starts a stderr line by which a process reports its error
// kind explicitly: "nodeq-error: Transport: upstream refused". The last such
// line wins over the exit code.
const ErrorLinePrefix = "nodeq-error:"

const (
	defaultMaxOutput = 16 << 20
	maxStderr        = 64 << 10
)

// Process returns an executor that runs cfg.Command once per task: the payload
// on stdin, the output read from stdout. See docs/executors.md for the protocol.
func Process(cfg ProcessConfig) (Executor, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("process node: command is empty")
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("process node: command %q: %w", cfg.Command[0], err)
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = defaultMaxOutput
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 2 * time.Second
	}
	if err := checkEnvConfig(cfg); err != nil {
		return nil, err
	}
	p := &process{cfg: cfg, path: path}
	return Func(p.execute), nil
}

type process struct {
	cfg  ProcessConfig
	path string
}

// limitedBuffer keeps at most max bytes and remembers whether more came.
type limitedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
	tail     bool // keep the last max bytes instead of the first
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if l.tail {
		l.buf.Write(p)
		if over := l.buf.Len() - l.max; over > 0 {
			l.buf.Next(over)
			l.overflow = true
		}
		return n, nil
	}
	if room := l.max - l.buf.Len(); room < len(p) {
		l.overflow = true
		p = p[:max(room, 0)]
	}
	l.buf.Write(p)
	return n, nil
}

func (p *process) execute(ctx context.Context, t *task.Envelope) ([]byte, error) {
	name := p.cfg.Command[0]
	runID := rand.Text()
	cmd := exec.CommandContext(ctx, p.path, p.cfg.Command[1:]...)
	cmd.Dir = p.cfg.Dir
	env, taskBytes, err := p.env(t, runID)
	if err != nil {
		return nil, err
	}
	cmd.Env = env
	if err := checkArgSpace(cmd, taskBytes); err != nil {
		return nil, resilience.Wrap(resilience.Manifest, fmt.Errorf("process %s: %w", name, err))
	}

	cio, err := newChildIO(cmd, p.cfg.MaxOutput)
	if err != nil {
		return nil, resilience.Wrap(resilience.Io, fmt.Errorf("process %s: %w", name, err))
	}
	run := newProcRun(cmd, p.cfg.KillGrace, runID)
	if err := run.start(); err != nil {
		cio.abort()
		if ctx.Err() != nil {
			return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("process %s: %w", name, ctx.Err()))
		}
		// Could not start: this machine's problem (EAGAIN, ENOMEM, EMFILE...),
		// worth retrying elsewhere. What the task controls was checked above.
		return nil, resilience.Wrap(resilience.Io, fmt.Errorf("process %s: %w", name, err))
	}
	cio.start(t.Payload)
	// wait returns once the command has exited and what it left behind has
	// been killed (see procRun); only then are the pipes drained, so that a
	// leftover holding them open cannot keep the run going.
	err = run.wait()
	cio.finish(pipeDrainDelay)

	if run.terminated() {
		return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("process %s: %w (process group killed)", name, ctx.Err()))
	}
	if err != nil {
		return nil, p.classify(err, cio.stderr.buf.String())
	}
	if cio.stdout.overflow {
		return nil, resilience.Errorf(resilience.Serialization, "process %s: output exceeds %d bytes", name, p.cfg.MaxOutput)
	}
	return cio.stdout.buf.Bytes(), nil
}

// RunIDEnv is the variable that carries a unique ID for each run of a
// process node. Processes the run starts inherit it, which is how, on Linux,
// the ones that leave the process group are found and killed after the run.
const RunIDEnv = "NODEQ_RUN_ID"

// pipeDrainDelay bounds how long the output pipes are read after the run's
// processes are gone: only a process that escaped the cleanup can still hold
// them open, and it does not get to hold up the task.
const pipeDrainDelay = time.Second

// env returns the child's environment, and how many of its bytes come from
// the task. A task value that cannot be passed in an environment variable (a
// NUL byte, or longer than the system allows) fails the task permanently:
// otherwise the start would fail, and a start failure looks like this
// machine's fault.
func (p *process) env(t *task.Envelope, runID string) ([]string, int, error) {
	env := make([]string, 0, len(p.cfg.PassEnv)+len(p.cfg.Env)+8)
	for _, name := range p.cfg.PassEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for k, v := range p.cfg.Env {
		env = append(env, k+"="+v)
	}
	params, err := json.Marshal(t.Params)
	if err != nil {
		return nil, 0, resilience.Wrap(resilience.Manifest, fmt.Errorf("process %s: params cannot be passed as JSON in NODEQ_PARAMS: %w", p.cfg.Command[0], err))
	}
	fromTask := []struct{ name, value, what string }{
		{"NODEQ_TASK_ID", t.ID, "the task ID"},
		{"NODEQ_NODE_ID", t.NodeID, "the node ID"},
		{"NODEQ_NODE_TYPE", t.NodeType, "the node type"},
		{"NODEQ_CORRELATION_ID", t.CorrelationID, "the correlation ID"},
		{"NODEQ_PARAMS", string(params), "the params as JSON"},
	}
	taskBytes := 0
	for _, v := range fromTask {
		if i := strings.IndexByte(v.value, 0); i >= 0 {
			return nil, 0, resilience.Errorf(resilience.Manifest,
				"process %s: %s (%s) contains a NUL byte at offset %d, which an environment variable cannot carry",
				p.cfg.Command[0], v.name, v.what, i)
		}
		s := v.name + "=" + v.value
		if len(s) > maxEnvVar {
			return nil, 0, resilience.Errorf(resilience.Manifest,
				"process %s: %s (%s) would be %d bytes, over the limit of %d bytes for one environment variable; send large data in the payload",
				p.cfg.Command[0], v.name, v.what, len(s), maxEnvVar)
		}
		taskBytes += len(s) + 1
		env = append(env, s)
	}
	return append(env,
		"NODEQ_PAYLOAD_ENCODING="+t.PayloadEncoding.String(),
		RunIDEnv+"="+runID,
	), taskBytes, nil
}

// checkEnvConfig checks the operator's variables once, when the node is
// configured: they are the same for every task.
func checkEnvConfig(cfg ProcessConfig) error {
	badName := func(name string) bool { return name == "" || strings.ContainsAny(name, "=\x00") }
	for _, name := range cfg.PassEnv {
		if badName(name) {
			return fmt.Errorf("process node: pass_env: %q is not a variable name", name)
		}
	}
	for k, v := range cfg.Env {
		switch {
		case badName(k):
			return fmt.Errorf("process node: env: %q is not a variable name", k)
		case strings.IndexByte(v, 0) >= 0:
			return fmt.Errorf("process node: env %s: the value contains a NUL byte", k)
		case len(k)+1+len(v) > maxEnvVar:
			return fmt.Errorf("process node: env %s: %d bytes, over the limit of %d bytes for one environment variable", k, len(k)+1+len(v), maxEnvVar)
		}
	}
	return nil
}

// childIO connects the child's stdin, stdout and stderr through pipes of
// our own rather than os/exec's: cmd.Wait then returns when the command
// exits, not when every process that inherited the pipes has closed them.
type childIO struct {
	inR, inW, outR, outW, errR, errW *os.File
	stdout, stderr                   *limitedBuffer
	wg                               sync.WaitGroup
}

func newChildIO(cmd *exec.Cmd, maxOutput int) (*childIO, error) {
	c := &childIO{stdout: &limitedBuffer{max: maxOutput}, stderr: &limitedBuffer{max: maxStderr, tail: true}}
	var err error
	if c.inR, c.inW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if c.outR, c.outW, err = os.Pipe(); err != nil {
		c.abort()
		return nil, err
	}
	if c.errR, c.errW, err = os.Pipe(); err != nil {
		c.abort()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.inR, c.outW, c.errW
	return c, nil
}

// abort closes every pipe end; the command did not start.
func (c *childIO) abort() {
	for _, f := range []*os.File{c.inR, c.inW, c.outR, c.outW, c.errR, c.errW} {
		if f != nil {
			f.Close()
		}
	}
}

// start closes the child's ends (it has its own copies now), writes the
// payload to stdin and reads stdout and stderr.
func (c *childIO) start(payload []byte) {
	c.inR.Close()
	c.outW.Close()
	c.errW.Close()
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		// An error means the command stopped reading; that is its business.
		_, _ = c.inW.Write(payload)
		c.inW.Close()
	}()
	for _, p := range []struct {
		r   *os.File
		buf *limitedBuffer
	}{{c.outR, c.stdout}, {c.errR, c.stderr}} {
		go func() {
			defer c.wg.Done()
			_, _ = io.Copy(p.buf, p.r)
		}()
	}
}

// finish waits up to delay for the pipes to reach end of file, then closes
// them, which stops the copying, and waits for it.
func (c *childIO) finish(delay time.Duration) {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	c.inW.Close()
	c.outR.Close()
	c.errR.Close()
	<-done
}

// classify maps a failed run to a kind: an explicit "nodeq-error:" line on
// stderr first, then the exit code.
func (p *process) classify(err error, stderr string) error {
	name := p.cfg.Command[0]
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// Could not start, or pipes failed: this machine's problem, worth retrying elsewhere.
		return resilience.Wrap(resilience.Io, fmt.Errorf("process %s: %w", name, err))
	}
	if kind, msg, ok := reportedError(stderr); ok {
		return resilience.Wrap(kind, fmt.Errorf("process %s: %s", name, msg))
	}
	detail := lastLine(stderr)
	code := exitErr.ExitCode()
	if code < 0 { // killed by a signal (OOM killer, operator)
		return resilience.Wrap(resilience.Execution, fmt.Errorf("process %s: %v%s", name, exitErr, detail))
	}
	kind := resilience.Other
	switch code {
	case ExitTempFail:
		kind = resilience.Execution
	case ExitIOErr:
		kind = resilience.Io
	case ExitUnavailable:
		kind = resilience.Transport
	case ExitDataErr:
		kind = resilience.Marshaling
	case ExitUsage, ExitConfig:
		kind = resilience.Manifest
	}
	return resilience.Wrap(kind, fmt.Errorf("process %s: exit status %d%s", name, code, detail))
}

func reportedError(stderr string) (resilience.Kind, string, bool) {
	lines := strings.Split(stderr, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		rest, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), ErrorLinePrefix)
		if !ok {
			continue
		}
		kindName, msg, _ := strings.Cut(strings.TrimSpace(rest), ":")
		kind, err := resilience.ParseKind(strings.TrimSpace(kindName))
		if err != nil {
			return resilience.Other, "reported unknown error kind " + strconv.Quote(kindName) + ": " + strings.TrimSpace(msg), true
		}
		return kind, strings.TrimSpace(msg), true
	}
	return 0, "", false
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return ""
	}
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	return ": " + s
}

var _ io.Writer = (*limitedBuffer)(nil)
