package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// Defaults and bounds of a worker node.
const (
	// DefaultWorkerPoolSize is how many processes a worker node keeps.
	DefaultWorkerPoolSize = 2
	// MaxWorkerPoolSize bounds pool_size.
	MaxWorkerPoolSize = 64
	// DefaultWorkerStartupTimeout bounds a process's start-up, until its ready message.
	DefaultWorkerStartupTimeout = 10 * time.Second
	// DefaultWorkerRestartBackoff is the wait before the first restart after
	// a process failed; it doubles with each failure in a row.
	DefaultWorkerRestartBackoff = 100 * time.Millisecond
	// DefaultWorkerMaxRestartBackoff caps the wait between restarts.
	DefaultWorkerMaxRestartBackoff = 30 * time.Second
)

// WorkerConfig configures a worker node: a pool of long-lived processes
// that run tasks one at a time over the worker protocol (docs/executors.md).
// The command comes from the operator's configuration, never from a task.
type WorkerConfig struct {
	// Command is the program and its arguments; no shell is involved.
	Command []string
	// Dir is the working directory; empty means the consumer's.
	Dir string
	// Env sets variables for the processes; they get only these, the ones
	// named in PassEnv, NODEQ_RUN_ID and NODEQ_WORKER_PROTOCOL.
	Env map[string]string
	// PassEnv names variables copied from the consumer's environment.
	PassEnv []string
	// PoolSize is how many processes run at most; 0 means DefaultWorkerPoolSize.
	PoolSize int
	// MaxTasksPerProcess recycles a process after that many tasks; 0 never does.
	MaxTasksPerProcess int
	// MaxOutput caps a task's output in bytes; 0 means 16 MiB.
	MaxOutput int
	// StartupTimeout bounds a start, until the ready message; 0 means DefaultWorkerStartupTimeout.
	StartupTimeout time.Duration
	// KillGrace is how long a process group gets after SIGTERM before
	// SIGKILL; 0 means 2s.
	KillGrace time.Duration
	// RestartBackoff and MaxRestartBackoff space the restarts after
	// failures in a row; 0 means the defaults.
	RestartBackoff, MaxRestartBackoff time.Duration
	// Logger receives stderr lines and restarts; nil means slog.Default().
	Logger *slog.Logger
}

// runtimeKind is the kind of a process's failures before its ready
// message names its runtime: PythonVm for a python command, else Execution.
func (c *WorkerConfig) runtimeKind() resilience.Kind {
	if strings.HasPrefix(strings.ToLower(filepath.Base(c.Command[0])), "python") {
		return resilience.PythonVm
	}
	return resilience.Execution
}

// WorkerPool is the executor of a worker node. Processes start when a task
// needs one and none is idle; Close stops them.
type WorkerPool struct {
	cfg  WorkerConfig
	path string
	log  *slog.Logger

	slots chan struct{}       // one per live or starting process
	idle  chan *workerProcess // processes waiting for a task
	done  chan struct{}       // closed by Close
	wg    sync.WaitGroup      // goroutines that retire processes
	once  sync.Once

	mu       sync.Mutex
	failures int       // process failures in a row
	retryAt  time.Time // no start before
	lastErr  error     // the last failure
	starts   int       // processes started (with a ready message or not)
}

// Worker returns the executor of a worker node.
func Worker(cfg WorkerConfig) (*WorkerPool, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("worker node: command is empty")
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err != nil {
		return nil, fmt.Errorf("worker node: command %q: %w", cfg.Command[0], err)
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = DefaultWorkerPoolSize
	}
	if cfg.PoolSize < 1 || cfg.PoolSize > MaxWorkerPoolSize {
		return nil, fmt.Errorf("worker node: pool_size %d: want 1 to %d", cfg.PoolSize, MaxWorkerPoolSize)
	}
	if cfg.MaxTasksPerProcess < 0 {
		return nil, errors.New("worker node: max_tasks_per_process must not be negative")
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = defaultMaxOutput
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultWorkerStartupTimeout
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 2 * time.Second
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = DefaultWorkerRestartBackoff
	}
	if cfg.MaxRestartBackoff <= 0 {
		cfg.MaxRestartBackoff = DefaultWorkerMaxRestartBackoff
	}
	if err := checkEnvConfig(ProcessConfig{Env: cfg.Env, PassEnv: cfg.PassEnv}); err != nil {
		return nil, fmt.Errorf("worker node: %s", strings.TrimPrefix(err.Error(), "process node: "))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &WorkerPool{
		cfg: cfg, path: path, log: cfg.Logger.With("worker", cfg.Command[0]),
		slots: make(chan struct{}, cfg.PoolSize), idle: make(chan *workerProcess, cfg.PoolSize), done: make(chan struct{}),
	}, nil
}

var errPoolClosed = errors.New("worker pool closed")

// Execute runs t on an idle process, or on one it starts.
func (w *WorkerPool) Execute(ctx context.Context, t *task.Envelope) ([]byte, error) {
	name := w.cfg.Command[0]
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("worker %s: waiting for a free process: %w", name, ctx.Err()))
	case <-w.done:
		return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("worker %s: %w", name, errPoolClosed))
	}
	var p *workerProcess
	select {
	case p = <-w.idle:
	default:
		var err error
		if p, err = w.start(ctx); err != nil {
			return nil, fmt.Errorf("worker %s: %w", name, err)
		}
	}
	out, err, healthy := p.runTask(ctx, t)
	if healthy {
		w.succeeded()
	} else {
		w.failed(err, p.pid)
	}
	w.release(p, healthy)
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", name, err)
	}
	return out, nil
}

// release gives p back, or retires it (recycled, broken or the pool
// closed); its slot is free once it is gone.
func (w *WorkerPool) release(p *workerProcess, healthy bool) {
	recycle := w.cfg.MaxTasksPerProcess > 0 && p.tasks >= w.cfg.MaxTasksPerProcess
	select {
	case <-w.done:
		healthy = false
	default:
	}
	if healthy && !recycle {
		w.idle <- p // never blocks: there are no more processes than slots
		<-w.slots
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if healthy {
			w.log.Debug("worker process recycled", "pid", p.pid, "tasks", p.tasks)
			p.retire()
		} else {
			p.kill()
			<-p.exited
		}
		<-w.slots
	}()
}

// start starts a process, after the backoff of the failures before it. It
// holds the caller's slot; when the task's context ends first, the start
// goes on and the process becomes idle.
func (w *WorkerPool) start(ctx context.Context) (*workerProcess, error) {
	w.mu.Lock()
	wait, failures, lastErr := time.Until(w.retryAt), w.failures, w.lastErr
	w.mu.Unlock()
	if wait > 0 {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			<-w.slots
			return nil, resilience.Wrap(w.cfg.runtimeKind(), fmt.Errorf("not restarted: %d process failures in a row, next start in %v; last: %w",
				failures, wait.Round(time.Millisecond), lastErr))
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			<-w.slots
			return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("waiting to restart a process: %w", ctx.Err()))
		case <-w.done:
			timer.Stop()
			<-w.slots
			return nil, resilience.Wrap(resilience.Execution, errPoolClosed)
		}
	}
	type started struct {
		p   *workerProcess
		err error
	}
	ch := make(chan started, 1)
	go func() {
		w.mu.Lock()
		w.starts++
		w.mu.Unlock()
		p, err := spawn(&w.cfg, w.path, w.log, w.done)
		if err != nil {
			w.failed(err, 0)
		} else {
			w.log.Info("worker process started", "pid", p.pid)
		}
		ch <- started{p, err}
	}()
	select {
	case s := <-ch:
		if s.err != nil {
			<-w.slots
		}
		return s.p, s.err
	case <-ctx.Done():
		go func() {
			if s := <-ch; s.p != nil {
				w.release(s.p, true)
			} else {
				<-w.slots
			}
		}()
		return nil, resilience.Wrap(resilience.Execution, fmt.Errorf("waiting for a process to start: %w", ctx.Err()))
	}
}

// failed records a process failure and sets the backoff of the next start.
func (w *WorkerPool) failed(err error, pid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures++
	backoff := w.cfg.MaxRestartBackoff
	if w.failures <= 30 {
		backoff = min(w.cfg.RestartBackoff<<(w.failures-1), backoff)
	}
	w.retryAt = time.Now().Add(backoff)
	w.lastErr = err
	w.log.Error("worker process failed", "pid", pid, "failures_in_a_row", w.failures, "next_start_in", backoff, "error", err)
}

// succeeded ends a run of failures.
func (w *WorkerPool) succeeded() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures, w.retryAt, w.lastErr = 0, time.Time{}, nil
}

// Starts reports how many processes the pool has started.
func (w *WorkerPool) Starts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts
}

// Close stops the idle processes and those that finish their task
// afterwards, and waits for them to exit. Tasks that start after Close
// fail. Calling it again does nothing.
func (w *WorkerPool) Close() error {
	w.once.Do(w.close)
	return nil
}

func (w *WorkerPool) close() {
	close(w.done)
	// Take every slot: a task in flight gives its back once it is done
	// and its process is gone. Then the idle processes are all there is.
	for range cap(w.slots) {
		w.slots <- struct{}{}
	}
	// Retired together: each may take up to twice KillGrace.
	for {
		select {
		case p := <-w.idle:
			w.wg.Add(1)
			go func() { defer w.wg.Done(); p.retire() }()
			continue
		default:
		}
		break
	}
	w.wg.Wait()
}
