package executor

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Bounds of what a worker writes on stderr.
const (
	maxStderrLine      = 4 << 10 // longer lines are cut
	maxStderrLinesTask = 200     // lines logged per task (or between tasks); more are counted
	stderrTailSize     = 4 << 10 // kept for the error of a crash
)

// workerProcess is one long-lived worker process: its pipes, the
// goroutines that read them, and the task it runs, if any.
type workerProcess struct {
	cfg         *WorkerConfig
	log         *slog.Logger
	cmd         *exec.Cmd
	pid         int
	runtimeKind resilience.Kind
	tasks       int // tasks run, for recycling; only the pool's current user touches it

	stdin   *os.File
	msgs    chan workerMessage // stdout messages; closed when stdout fails or ends
	readErr error              // why msgs was closed; read after it is
	stopped chan struct{}      // closed by kill: nobody waits for messages any more
	exited  chan struct{}      // closed once the process has exited and been reaped
	waitErr error              // the exit status; read after exited is closed
	kill    func()             // SIGTERM to the process group, SIGKILL after the grace

	stopOnce sync.Once
	current  atomic.Pointer[slog.Logger] // the running task's logger, for stderr lines
	logMu    sync.Mutex
	logged   int
	dropped  int
	tail     limitedBuffer // the last bytes of stderr
}

// spawn starts a worker process and waits for its ready message.
func spawn(cfg *WorkerConfig, path string, log *slog.Logger, closed <-chan struct{}) (*workerProcess, error) {
	runID := rand.Text()
	procCtx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(procCtx, path, cfg.Command[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = workerEnv(cfg, runID)
	var pipes [6]*os.File // inR, inW, outR, outW, errR, errW
	closeAll := func() {
		for _, f := range pipes {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := 0; i < len(pipes); i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			cancel()
			closeAll()
			return nil, resilience.Wrap(resilience.Io, fmt.Errorf("pipe: %w", err))
		}
		pipes[i], pipes[i+1] = r, w
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes[0], pipes[3], pipes[5]
	run := newProcRun(cmd, cfg.KillGrace, runID)
	if err := run.start(); err != nil {
		cancel()
		closeAll()
		return nil, resilience.Wrap(resilience.Io, err)
	}
	pipes[0].Close()
	pipes[3].Close()
	pipes[5].Close()
	p := &workerProcess{
		cfg: cfg, cmd: cmd, pid: cmd.Process.Pid, runtimeKind: cfg.runtimeKind(),
		stdin: pipes[1], msgs: make(chan workerMessage), stopped: make(chan struct{}), exited: make(chan struct{}),
		tail: limitedBuffer{max: stderrTailSize, tail: true},
	}
	p.log = log.With("pid", p.pid)
	p.kill = func() {
		p.stopOnce.Do(func() { close(p.stopped) })
		cancel()
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.readStdout(pipes[2]) }()
	go func() { defer readers.Done(); p.readStderr(pipes[4]) }()
	go func() {
		p.waitErr = run.wait()
		p.stopOnce.Do(func() { close(p.stopped) })
		cancel()
		// Only a process that escaped the cleanup can still hold the pipes open.
		drained := make(chan struct{})
		go func() { readers.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(pipeDrainDelay):
		}
		pipes[2].Close()
		pipes[4].Close()
		<-drained
		p.stdin.Close()
		close(p.exited)
	}()
	if err := p.handshake(closed); err != nil {
		p.kill()
		<-p.exited
		return nil, err
	}
	return p, nil
}

// workerEnv is the process's environment: only what the operator passes,
// the run ID that finds its escaped children (Linux) and the protocol.
func workerEnv(cfg *WorkerConfig, runID string) []string {
	env := make([]string, 0, len(cfg.PassEnv)+len(cfg.Env)+2)
	for _, name := range cfg.PassEnv {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	return append(env, RunIDEnv+"="+runID, fmt.Sprintf("NODEQ_WORKER_PROTOCOL=%d", WorkerProtocol))
}

// handshake waits for the ready message, or until closed (the pool's Close).
func (p *workerProcess) handshake(closed <-chan struct{}) error {
	timer := time.NewTimer(p.cfg.StartupTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-p.msgs:
		if !ok {
			return p.died("before its ready message", p.readErr)
		}
		if err := checkReady(m); err != nil {
			return resilience.Wrap(p.runtimeKind, fmt.Errorf("worker process %d %w", p.pid, err))
		}
		if k, ok := runtimeKinds[m.Runtime]; ok {
			p.runtimeKind = k
		}
		return nil
	case <-closed:
		return resilience.Wrap(resilience.Execution, fmt.Errorf("worker process %d: %w before its ready message", p.pid, errPoolClosed))
	case <-timer.C:
		return resilience.Wrap(p.runtimeKind, fmt.Errorf("worker process %d sent no ready message within the startup timeout of %v%s",
			p.pid, p.cfg.StartupTimeout, p.stderrTail()))
	}
}

// died describes a process whose stdout ended or broke.
func (p *workerProcess) died(when string, readErr error) error {
	if readErr != nil && !errors.Is(readErr, os.ErrClosed) && !errors.Is(readErr, errEOF) {
		// It wrote something that is not the protocol: it is broken.
		return resilience.Wrap(p.runtimeKind, fmt.Errorf("worker process %d broke the protocol %s: %w", p.pid, when, readErr))
	}
	status := "closed its stdout"
	select {
	case <-p.exited:
		status = "exited"
		if p.waitErr != nil {
			status = "exited: " + p.waitErr.Error()
		}
	case <-time.After(time.Second):
	}
	return resilience.Wrap(p.runtimeKind, fmt.Errorf("worker process %d %s %s%s", p.pid, status, when, p.stderrTail()))
}

// errEOF is the end of stdout.
var errEOF = errors.New("end of stdout")

// readStdout turns stdout lines into messages until stdout ends, breaks or
// carries something that is not the protocol.
func (p *workerProcess) readStdout(f *os.File) {
	defer close(p.msgs)
	br := bufio.NewReaderSize(f, 64<<10)
	limit := maxLineFor(p.cfg.MaxOutput)
	for {
		line, err := readLine(br, limit)
		if err != nil {
			switch {
			case errors.Is(err, errLineTooLong):
				err = fmt.Errorf("stdout line over %d bytes", limit)
			case errors.Is(err, os.ErrClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				err = errEOF
			}
			p.readErr = err
			return
		}
		m, err := parseMessage(line)
		if err != nil {
			p.readErr = err
			return
		}
		select {
		case p.msgs <- m:
		case <-p.stopped:
			p.readErr = os.ErrClosed
			return
		}
	}
}

// readStderr logs stderr lines, attributed to the running task, bounded in
// length and number.
func (p *workerProcess) readStderr(f *os.File) {
	br := bufio.NewReaderSize(f, maxStderrLine)
	for {
		line, err := br.ReadSlice('\n')
		cut := errors.Is(err, bufio.ErrBufferFull)
		if len(line) > 0 {
			p.logMu.Lock()
			p.tail.Write(line)
			if cut {
				p.tail.Write([]byte("\n"))
			}
			log := p.current.Load()
			if log == nil {
				log = p.log
			}
			p.logged++
			if p.logged <= maxStderrLinesTask {
				text := string(trimNewline(line))
				if cut {
					text += " [cut]"
				}
				log.Info("worker stderr", "line", text)
			} else {
				p.dropped++
			}
			p.logMu.Unlock()
		}
		for cut { // discard the rest of a long line
			_, err = br.ReadSlice('\n')
			cut = errors.Is(err, bufio.ErrBufferFull)
		}
		if err != nil {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// attribute sets the logger of stderr lines to the task's, and reports
// the lines dropped since the last call.
func (p *workerProcess) attribute(log *slog.Logger) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if p.dropped > 0 {
		prev := p.current.Load()
		if prev == nil {
			prev = p.log
		}
		prev.Warn("worker stderr lines dropped", "dropped", p.dropped, "logged", maxStderrLinesTask)
	}
	p.logged, p.dropped = 0, 0
	p.current.Store(log)
}

// stderrTail is the last line of stderr, for an error message.
func (p *workerProcess) stderrTail() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return lastLine(p.tail.buf.String())
}

// runTask sends t and waits for the answer. healthy is false when the
// process must not run another task: it died, broke the protocol or was
// killed on the task's timeout.
func (p *workerProcess) runTask(ctx context.Context, t *task.Envelope) (out []byte, err error, healthy bool) {
	deadline, _ := ctx.Deadline()
	line, err := encodeRequest(t, AttemptFrom(ctx), deadline)
	if err != nil {
		return nil, err, true
	}
	a := AttemptFrom(ctx)
	// Lines read after the answer (stderr and stdout are separate pipes)
	// or between tasks stay attributed to this task until the next one.
	p.attribute(p.log.With("task_id", t.ID, "node_type", t.NodeType, "attempt", max(a.Number, 1)))
	p.tasks++
	written := make(chan error, 1)
	go func() {
		_, err := p.stdin.Write(line)
		written <- err
	}()
	for {
		select {
		case err := <-written:
			if err != nil {
				p.kill()
				return nil, p.died("while reading its task", nil), false
			}
			written = nil
		case m, ok := <-p.msgs:
			if !ok {
				p.kill()
				return nil, p.died("while running the task", p.readErr), false
			}
			out, taskErr, violation := outcome(m, t.ID, p.cfg.MaxOutput, p.runtimeKind)
			if violation != nil {
				p.kill()
				return nil, resilience.Wrap(p.runtimeKind, fmt.Errorf("worker process %d broke the protocol: %w", p.pid, violation)), false
			}
			if written != nil { // answered before reading all of it: the write ends now or never
				select {
				case err := <-written:
					if err != nil {
						p.kill()
						return nil, p.died("while reading its task", nil), false
					}
				case <-ctx.Done(): // it stopped reading its task: it cannot run another
					p.kill()
					return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("worker process %d answered but did not read the rest of its task: %w (process group killed)", p.pid, ctx.Err())), false
				}
			}
			return out, taskErr, true
		case <-ctx.Done():
			p.kill()
			return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("worker process %d: %w (process group killed)", p.pid, ctx.Err())), false
		}
	}
}

// retire ends a healthy process: it closes stdin, on which the process
// exits, and kills it if it is still there after the grace.
func (p *workerProcess) retire() {
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(p.cfg.KillGrace):
		p.kill()
		<-p.exited
	}
}
