//go:build !unix

package exec

import (
	"os/exec"
	"time"
)

// setProcessGroup does nothing here: without unix process groups a timeout
// reaches only the command itself, not processes it started.
func setProcessGroup(*exec.Cmd) {}

// terminateGroup kills the command at once: there is no SIGTERM to send
// first, so grace is not used.
func terminateGroup(cmd *exec.Cmd, _ time.Duration) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}

// killGroup kills the command.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
