//go:build unix

package exec

import (
	"os/exec"
	"syscall"
	"time"
)

// setProcessGroup puts the child in a process group of its own so that a
// timeout can stop everything it started.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminateGroup sends SIGTERM to the group, then SIGKILL after grace.
func terminateGroup(cmd *exec.Cmd, grace time.Duration) error {
	if cmd.Process == nil {
		return nil
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	time.AfterFunc(grace, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	return nil
}

// killGroup sends SIGKILL to the whole group, reaching grandchildren that
// outlived the leader.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
