//go:build linux

package executor

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper finds the processes a run leaves behind outside its process
// group. A process that calls setsid (or setpgid) escapes a group kill; when
// its parent exits it is reparented to the nearest child subreaper, which
// the consumer makes itself (prctl PR_SET_CHILD_SUBREAPER) before its first
// run. After each run the reaper goes through the consumer's children that
// are not commands in flight: it SIGKILLs those in the run's group or whose
// environment carries the run's NODEQ_RUN_ID, and reaps (wait4 on that pid)
// every zombie among them, so that orphans do not pile up.
//
// os/exec reaps the commands it starts, and a wait4 on one of them would
// steal its exit status. So, under mu, commands are started and registered
// in active, and reaped by os/exec and unregistered; and a sweep acts on a
// child only under mu, after checking that it is not active: under mu,
// every child that os/exec will wait for is registered.
//
// Zombies in the consumer's own process group are left alone (unless the
// reaper killed them): those may be children that other code in this
// process started with os/exec and has yet to wait for. A run's processes
// are never in that group unless they join it on purpose.
type reaperState struct {
	once          sync.Once
	subreaper     bool // prctl succeeded
	childrenFiles bool // /proc/<pid>/task/<tid>/children exists (CONFIG_PROC_CHILDREN)

	mu     sync.Mutex
	active map[int]struct{} // pids of commands started and not yet reaped by os/exec
	unsure map[procKey]int  // children whose environment read as empty, and in how many passes
}

var reaper = &reaperState{active: map[int]struct{}{}, unsure: map[procKey]int{}}

// procKey names a process across pid reuse.
type procKey struct {
	pid   int
	start uint64 // start time, in clock ticks after boot
}

// leftoverTimeout bounds how long a run's cleanup waits for the processes
// it killed to die (one stuck in uninterruptible sleep, for instance); a
// later run's sweep reaps them.
const leftoverTimeout = 2 * time.Second

// start makes the consumer a subreaper (once), then starts cmd and
// registers it as active.
func (rp *reaperState) start(cmd *exec.Cmd) error {
	rp.once.Do(func() {
		// Needs no privileges (Linux 3.4+). Without it, orphans go to init
		// and only the group kill applies, as on other systems.
		rp.subreaper = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil
		_, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
		rp.childrenFiles = err == nil
	})
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	rp.active[cmd.Process.Pid] = struct{}{}
	return nil
}

// wait reaps cmd, whose command has exited, and unregisters it.
func (rp *reaperState) wait(cmd *exec.Cmd) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	err := cmd.Wait()
	delete(rp.active, cmd.Process.Pid)
	return err
}

// release unregisters pid, which os/exec has reaped.
func (rp *reaperState) release(pid int) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	delete(rp.active, pid)
}

// awaitGroup waits until no live process is left in group pgid, or until
// deadline. Its leader is dead; as a subreaper the consumer need only look
// at its own children (the members' orphans are reparented to it),
// otherwise at every process.
func (rp *reaperState) awaitGroup(pgid int, deadline time.Time) {
	self := os.Getpid()
	isLive := func(st procStat) bool { return st.pgid == pgid && !st.dead() }
	for {
		alive := false
		if rp.subreaper {
			rp.mu.Lock()
			for _, pid := range rp.children(self) {
				if _, ok := rp.active[pid]; ok {
					continue
				}
				if st, ok := readProcStat(pid); ok && st.ppid == self && isLive(st) {
					alive = true
					break
				}
			}
			rp.mu.Unlock()
		} else {
			scanProc(func(st procStat) bool {
				alive = isLive(st)
				return !alive
			})
		}
		left := time.Until(deadline)
		if !alive || left <= 0 {
			return
		}
		time.Sleep(min(10*time.Millisecond, left))
	}
}

// killLeftovers kills what the run whose command led group pgid left
// behind: the group, then, as a subreaper, its escaped processes, until a
// sweep finds nothing more to do.
func (rp *reaperState) killLeftovers(pgid int, runID string) {
	killGroup(pgid)
	if !rp.subreaper {
		return
	}
	sw := sweep{
		self:    os.Getpid(),
		ownPgid: syscall.Getpgrp(),
		pgid:    pgid,
		marker:  []byte(RunIDEnv + "=" + runID + "\x00"),
		killed:  map[int]bool{},
	}
	deadline := time.Now().Add(leftoverTimeout)
	pause := 200 * time.Microsecond
	for rp.sweep(&sw) && time.Now().Before(deadline) {
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// sweep is the state of one run's cleanup.
type sweep struct {
	self, ownPgid, pgid int
	marker              []byte       // NODEQ_RUN_ID=<id>\0
	killed              map[int]bool // sent SIGKILL, not yet reaped
}

// maxUnsure bounds the passes spent waiting for a child's environment to
// read as something (about 200ms with the pauses between passes). They are
// counted across runs, so that a process whose environment is empty for
// good costs that once, not in every run.
const maxUnsure = 15

// sweep makes one pass over the consumer's children. It reports whether it
// did something (killed or reaped a process) or waits for a killed process
// to die: then another pass is due, for the processes reparented meanwhile.
func (rp *reaperState) sweep(sw *sweep) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	more := false
	children := rp.children(sw.self)
	for k := range rp.unsure {
		if _, found := slices.BinarySearch(children, k.pid); !found {
			delete(rp.unsure, k)
		}
	}
	for _, pid := range children {
		if _, ok := rp.active[pid]; ok {
			continue
		}
		st, ok := readProcStat(pid)
		if !ok || st.ppid != sw.self {
			continue
		}
		if st.dead() {
			if st.pgid == sw.ownPgid && !sw.killed[pid] {
				continue // perhaps someone else's child; see reaperState
			}
			var ws unix.WaitStatus
			if wpid, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid {
				delete(sw.killed, pid)
				more = true
			}
			continue
		}
		inGroup := st.pgid == sw.pgid
		mark := markNone
		if !inGroup {
			mark = runMark(pid, sw.marker)
		}
		switch {
		case inGroup || mark == markFound:
			_ = unix.Kill(pid, unix.SIGKILL)
			sw.killed[pid] = true
			more = true
		case sw.killed[pid]:
			more = true // dying: its environment is already unreadable
		case mark == markUnknown && rp.unsure[st.key()] < maxUnsure:
			// In the middle of an execve, or exiting: look again.
			rp.unsure[st.key()]++
			more = true
		}
	}
	return more
}

// children lists the consumer's children, live or zombie, sorted. mu is held, so
// only other code in this process can reap one meanwhile (reading a
// children file while an entry is removed may miss another entry).
func (rp *reaperState) children(self int) []int {
	var pids []int
	if rp.childrenFiles {
		// Each thread has its own children; a child of a thread that exits
		// moves to another.
		tids, _ := readDirNames("/proc/self/task")
		for _, tid := range tids {
			b, err := os.ReadFile("/proc/self/task/" + tid + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(b) {
				if pid, err := strconv.Atoi(string(f)); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	} else {
		scanProc(func(st procStat) bool {
			if st.ppid == self {
				pids = append(pids, st.pid)
			}
			return true
		})
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// procStat is what the reaper reads from /proc/<pid>/stat.
type procStat struct {
	pid, ppid, pgid int
	state           byte
	start           uint64
}

func (st procStat) key() procKey { return procKey{st.pid, st.start} }

// dead reports a zombie (or a process being reaped).
func (st procStat) dead() bool { return st.state == 'Z' || st.state == 'X' }

// scanProc calls fn for every process in /proc until fn returns false.
func scanProc(fn func(procStat) bool) {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if name[0] < '0' || name[0] > '9' {
				continue
			}
			pid, err := strconv.Atoi(name)
			if err != nil {
				continue
			}
			if st, ok := readProcStat(pid); ok && !fn(st) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readProcStat reads /proc/<pid>/stat: "pid (comm) state ppid pgrp ...".
// comm may hold spaces and parentheses, so fields count from the last ')'.
func readProcStat(pid int) (procStat, bool) {
	var buf [1024]byte
	n, ok := readProcFile("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if !ok {
		return procStat{}, false
	}
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, false
	}
	// state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
	// cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime ...
	f := bytes.Fields(b[i+2:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgid, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{pid: pid, ppid: ppid, pgid: pgid, state: f[0][0], start: start}, true
}

// readProcFile reads the start of a small /proc file into buf.
func readProcFile(path string, buf []byte) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return n, n > 0
}

// A process's run mark: whether its environment holds the run's marker.
const (
	markNone    = iota // readable without the marker, or not readable at all
	markFound          // holds the marker
	markUnknown        // empty, for now or for good
)

// runMark reads process pid's environment for marker ("NAME=value\0").
// The environment of a process that changed its credentials (a setuid
// program) cannot be read: markNone. It reads as empty while the process
// is exiting, and for a moment during an execve (between the switch to the
// new memory image and the setup of its arguments): markUnknown, look
// again. A process whose environment really is empty (env -i) costs a few
// more passes, then is left alone.
func runMark(pid int, marker []byte) int {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	switch {
	case err != nil:
		return markNone
	case len(env) == 0:
		return markUnknown
	case bytes.HasPrefix(env, marker) || bytes.Contains(env, append([]byte{0}, marker...)):
		return markFound
	}
	return markNone
}
