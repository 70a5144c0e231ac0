//go:build linux

package executor

import (
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procRun is one run of a process node on Linux: the command in a process
// group of its own, tagged with a run ID in its environment. When the
// command exits (on its own or not), everything left in its group is
// killed, and so are the processes that left the group but still carry the
// run ID and have been reparented to the consumer, which is a child
// subreaper (see reaper_linux.go).
type procRun struct {
	*group
	runID string
}

func newProcRun(cmd *exec.Cmd, grace time.Duration, runID string) *procRun {
	return &procRun{group: newGroup(cmd, grace), runID: runID}
}

func (r *procRun) start() error { return reaper.start(r.cmd) }

// wait waits for the command to exit, kills what it left behind, and only
// then reaps the command: until then its pid, which is also its process
// group's ID, cannot be reused, so no signal can reach a stranger.
func (r *procRun) wait() error {
	pid := r.cmd.Process.Pid
	if waitExited(pid) != nil {
		// Should not happen. Reap first, then clean up as on other systems.
		err := r.cmd.Wait()
		reaper.release(pid)
		r.markExited()
		reaper.killLeftovers(pid, r.runID)
		r.markDone()
		return err
	}
	if termAt := r.markExited(); !termAt.IsZero() {
		// A timeout sent SIGTERM: the rest of the group gets what is left
		// of the grace to finish.
		reaper.awaitGroup(pid, termAt.Add(r.grace))
	}
	reaper.killLeftovers(pid, r.runID)
	r.markDone()
	return reaper.wait(r.cmd)
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// argSpaceMargin leaves room for what the kernel adds to the arguments of
// a "#!" script (the interpreter, its argument, the script's path).
const argSpaceMargin = 4 << 10

// checkArgSpace fails when the task's variables would push the command's
// arguments and environment past what execve accepts on this machine
// (E2BIG). If the operator's part is too big by itself, that is left to
// fail as a start failure: it is not the task's fault.
func checkArgSpace(cmd *exec.Cmd, taskBytes int) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rl); err != nil {
		return nil
	}
	limit := argSpace(rl.Cur)
	ptr := strconv.IntSize / 8
	need := len(cmd.Path) + 1 + argSpaceMargin
	for _, a := range cmd.Args {
		need += len(a) + 1 + ptr
	}
	for _, e := range cmd.Environ() {
		need += len(e) + 1 + ptr
	}
	if need <= limit || need-taskBytes > limit {
		return nil
	}
	return fmt.Errorf("its arguments and environment would take %d bytes, over the %d bytes this machine allows (a quarter of the stack size limit); %d of them are the task's NODEQ_* variables",
		need, limit, taskBytes)
}

// argSpace is the kernel's limit on the argument and environment strings
// of execve (fs/exec.c, bprm_stack_limits): a quarter of the stack limit,
// at most 3/4 of 8 MiB, at least 128 KiB.
func argSpace(stackLimit uint64) int {
	limit := min(uint64(8<<20/4*3), stackLimit/4)
	return int(max(limit, 128<<10))
}
