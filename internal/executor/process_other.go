//go:build !unix

package executor

import (
	"os/exec"
	"sync"
	"time"
)

// maxEnvVar is the longest "NAME=value" string passed to a child: Windows
// allows 32,767 characters per variable, terminator included.
const maxEnvVar = 32767 - 1

// procRun is one run of a process node without unix process groups: a
// timeout kills the command at once (there is no SIGTERM to send first, so
// the grace is not used), and processes it started are not reached, after
// a timeout or otherwise.
type procRun struct {
	cmd *exec.Cmd

	mu     sync.Mutex
	killed bool
}

func newProcRun(cmd *exec.Cmd, grace time.Duration, _ string) *procRun {
	r := &procRun{cmd: cmd}
	cmd.Cancel = func() error {
		err := cmd.Process.Kill()
		if err == nil {
			r.mu.Lock()
			r.killed = true
			r.mu.Unlock()
		}
		return err
	}
	cmd.WaitDelay = grace + time.Second
	return r
}

func (r *procRun) start() error { return r.cmd.Start() }

func (r *procRun) wait() error { return r.cmd.Wait() }

// terminated reports whether the run was stopped by its context.
func (r *procRun) terminated() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killed
}

// checkArgSpace checks nothing here: beyond maxEnvVar per variable, the
// system's own limit applies.
func checkArgSpace(*exec.Cmd, int) error { return nil }
