//go:build windows

package natsconn

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// lockOffsetHigh places the locked byte: far beyond the holder's record
// at the start of the file, which a LockFileEx lock would otherwise make
// unreadable to the process that wants to say who holds it.
const lockOffsetHigh = 1 << 30 // offset 2^62

// tryLock takes an exclusive LockFileEx lock on one byte of f without
// waiting. The lock belongs to the handle: a second open of the same file
// conflicts even within this process, and Windows drops it when the
// process dies.
func tryLock(f *os.File) error {
	return control(f, func(h windows.Handle) error {
		ol := &windows.Overlapped{OffsetHigh: lockOffsetHigh}
		err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_IO_PENDING) {
			return errStoreLocked
		}
		return err
	})
}

// unlock drops the lock taken by tryLock (closing f would too).
func unlock(f *os.File) error {
	return control(f, func(h windows.Handle) error {
		return windows.UnlockFileEx(h, 0, 1, 0, &windows.Overlapped{OffsetHigh: lockOffsetHigh})
	})
}

func control(f *os.File, fn func(h windows.Handle) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(windows.Handle(fd)) }); err != nil {
		return err
	}
	return ferr
}
