//go:build unix

package executor

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// maxEnvVar is the longest "NAME=value" string passed to a child: Linux's
// MAX_ARG_STRLEN (32 pages of 4 KiB, counting the terminating NUL). Other
// unix systems have no such limit on one string, but one rule everywhere
// keeps a task's fate independent of the machine it lands on.
const maxEnvVar = 128<<10 - 1

// group is one run's process group: the command leads it, and everything it
// starts joins it unless it asks to leave (setpgid, setsid).
type group struct {
	cmd   *exec.Cmd
	grace time.Duration

	mu     sync.Mutex
	termAt time.Time   // when a timeout sent SIGTERM; zero if none did
	exited bool        // the command has exited: a timeout no longer applies
	done   bool        // the run is over: the SIGKILL timer must not fire
	timer  *time.Timer // the SIGKILL that follows the SIGTERM
}

func newGroup(cmd *exec.Cmd, grace time.Duration) *group {
	g := &group{cmd: cmd, grace: grace}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = g.cancel
	// A backstop: os/exec kills the command itself if it outlives the
	// grace by a second (the group SIGKILL should have done it).
	cmd.WaitDelay = grace + time.Second
	return g
}

// cancel is os/exec's Cancel, called when the context is done before the
// command was waited for: SIGTERM to the group, SIGKILL after the grace.
func (g *group) cancel() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	pgid := g.cmd.Process.Pid // set before os/exec can call Cancel
	if g.exited || g.done || pgid <= 0 {
		return os.ErrProcessDone
	}
	g.termAt = time.Now()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	g.timer = time.AfterFunc(g.grace, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.done {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	return nil
}

// markExited records that the command has exited and returns when a
// timeout sent SIGTERM (zero if none did).
func (g *group) markExited() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.exited = true
	return g.termAt
}

// markDone disarms the SIGKILL timer: the run's processes are gone and its
// process group ID may soon name another group.
func (g *group) markDone() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// terminated reports whether the run was stopped by its context (timeout
// or cancellation) rather than ending on its own.
func (g *group) terminated() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.termAt.IsZero()
}

// killGroup sends SIGKILL to every process left in the group. A member
// that changed its credentials (a setuid program) is out of reach (EPERM).
func killGroup(pgid int) {
	if pgid > 0 { // -0 would be the consumer's own group
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}
