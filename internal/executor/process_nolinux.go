//go:build unix && !linux

package executor

import (
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// procRun is one run of a process node on a unix other than Linux: the
// command in a process group of its own. When the command has exited (on
// its own or not), whatever is left in the group is killed. A process that
// left the group (setsid, setpgid) is out of reach: these systems have no
// child subreaper to bring it back.
type procRun struct {
	*group
}

func newProcRun(cmd *exec.Cmd, grace time.Duration, _ string) *procRun {
	return &procRun{group: newGroup(cmd, grace)}
}

func (r *procRun) start() error { return r.cmd.Start() }

func (r *procRun) wait() error {
	err := r.cmd.Wait()
	pgid := r.cmd.Process.Pid
	if termAt := r.markExited(); !termAt.IsZero() {
		// A timeout sent SIGTERM: the rest of the group gets what is left
		// of the grace to finish.
		deadline := termAt.Add(r.grace)
		for time.Now().Before(deadline) && !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
		}
	}
	killGroup(pgid)
	r.markDone()
	return err
}

// checkArgSpace checks nothing here: beyond maxEnvVar per variable, the
// system's own limit applies.
func checkArgSpace(*exec.Cmd, int) error { return nil }
