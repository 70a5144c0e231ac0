package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	// before SIGKILL. 0 means 2s.
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
	cmd := exec.CommandContext(ctx, p.path, p.cfg.Command[1:]...)
	cmd.Dir = p.cfg.Dir
	cmd.Env = p.env(t)
	cmd.Stdin = bytes.NewReader(t.Payload)
	stdout := &limitedBuffer{max: p.cfg.MaxOutput}
	stderr := &limitedBuffer{max: maxStderr, tail: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	cmd.Cancel = func() error { return terminateGroup(cmd, p.cfg.KillGrace) }
	cmd.WaitDelay = p.cfg.KillGrace + time.Second

	err := cmd.Run()
	if ctx.Err() != nil {
		killGroup(cmd)
		return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("process %s: %w (process group killed)", p.cfg.Command[0], ctx.Err()))
	}
	if err != nil {
		return nil, p.classify(err, stderr.buf.String())
	}
	if stdout.overflow {
		return nil, resilience.Errorf(resilience.Serialization, "process %s: output exceeds %d bytes", p.cfg.Command[0], p.cfg.MaxOutput)
	}
	return stdout.buf.Bytes(), nil
}

func (p *process) env(t *task.Envelope) []string {
	env := make([]string, 0, len(p.cfg.PassEnv)+len(p.cfg.Env)+6)
	for _, name := range p.cfg.PassEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for k, v := range p.cfg.Env {
		env = append(env, k+"="+v)
	}
	params, _ := json.Marshal(t.Params)
	return append(env,
		"NODEQ_TASK_ID="+t.ID,
		"NODEQ_NODE_ID="+t.NodeID,
		"NODEQ_NODE_TYPE="+t.NodeType,
		"NODEQ_CORRELATION_ID="+t.CorrelationID,
		"NODEQ_PAYLOAD_ENCODING="+t.PayloadEncoding.String(),
		"NODEQ_PARAMS="+string(params),
	)
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
