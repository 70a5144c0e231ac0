//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd || windows)

package natsconn

import "os"

// tryLock has no OS lock to take on this platform: only embedded servers
// of the same process keep each other out of a store directory.
func tryLock(*os.File) error { return nil }

// unlock is tryLock's counterpart.
func unlock(*os.File) error { return nil }
