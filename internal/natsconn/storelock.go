package natsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nodeq/nodeq/internal/task"
)

// StoreLockFile is the file in an embedded server's store directory that
// the server holds an OS advisory lock on (flock on unix, LockFileEx on
// windows) for as long as it runs. Its content names the holder; only the
// lock counts: a file left behind by a process that died blocks nobody.
const StoreLockFile = "nodeq.lock"

// storeReleaseWait bounds how long StartEmbedded waits for a server of this
// process that is shutting down to release the store directory.
const storeReleaseWait = 30 * time.Second

// maxHolderBytes bounds how much of a lock file is read: its content is
// written by whoever could write the directory, and is untrusted text.
const maxHolderBytes = 4 << 10

// errStoreLocked is what the platform's tryLock returns when another open
// file holds the lock.
var errStoreLocked = errors.New("locked")

// errStoreLockedHere is errStoreLocked when the holder is a server of this
// process (heldStores).
var errStoreLockedHere = fmt.Errorf("%w by this process", errStoreLocked)

// StoreHolder is what a lock file says about the server holding it. Every
// field comes from the file and has been made safe to print: control and
// bidi characters removed, length bounded. Zero fields were not recorded.
type StoreHolder struct {
	PID   int
	URL   string
	Host  string
	Since time.Time
}

// StoreInUseError is returned by StartEmbedded when another embedded
// server, of this or another process, holds the store directory.
type StoreInUseError struct {
	// Dir is the store directory as configured.
	Dir string
	// Holder is what the lock file says; zero when it is empty or unreadable.
	Holder StoreHolder
}

// Error says who holds the directory and what to do instead.
func (e *StoreInUseError) Error() string {
	h := e.Holder
	var who []string
	if h.PID > 0 {
		w := fmt.Sprintf("pid %d", h.PID)
		if self, _ := os.Hostname(); h.Host != "" && h.Host != self {
			w += " on " + h.Host
		}
		who = append(who, w)
	}
	if h.URL != "" {
		who = append(who, h.URL)
	}
	if !h.Since.IsZero() {
		who = append(who, "since "+h.Since.UTC().Format(time.RFC3339))
	}
	desc := "holder not recorded in " + StoreLockFile
	if len(who) > 0 {
		desc = strings.Join(who, ", ")
	}
	todo := "stop that consumer, or give this consumer its own --data-dir"
	if h.URL != "" {
		todo = fmt.Sprintf("connect to it with --nats-url %s (NODEQ_NATS_URL), or give this consumer its own --data-dir", h.URL)
	}
	return fmt.Sprintf("store directory %s is in use by another nodeq consumer (%s): %s", e.Dir, desc, todo)
}

// storeLock is a held lock on a store directory.
type storeLock struct {
	dir  string   // as configured, for messages
	key  string   // absolute, symlinks resolved: the registry key
	f    *os.File // holds the OS lock while open
	info lockInfo

	mu       sync.Mutex
	srv      *server.Server // set once the server runs
	released chan struct{}  // closed by release
	done     bool
}

// lockInfo is the lock file's content.
type lockInfo struct {
	PID   int    `json:"pid"`
	URL   string `json:"url,omitempty"`
	Host  string `json:"host,omitempty"`
	Since string `json:"since"`
}

// heldStores are the store directories locked by embedded servers of this
// process. The OS lock already keeps two of them apart (flock and
// LockFileEx conflict between two opens of one file within a process too);
// the registry lets a new server wait for one that is shutting down, whose
// lock is released just after its shutdown completes.
var heldStores = struct {
	sync.Mutex
	m map[string]*storeLock
}{m: map[string]*storeLock{}}

// lockStore creates dir if needed and takes its lock, recording this
// process and url (empty when not known yet) in the lock file.
func lockStore(dir, url string) (*storeLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil { // as nats-server makes it
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	key, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	if resolved, err := filepath.EvalSymlinks(key); err == nil {
		key = resolved
	}
	path := filepath.Join(dir, StoreLockFile)
	deadline := time.Now().Add(storeReleaseWait)
	for {
		l, err := tryLockStore(dir, key, path)
		if err == nil {
			host, _ := os.Hostname()
			l.info = lockInfo{PID: os.Getpid(), URL: url, Host: host, Since: time.Now().UTC().Format(time.RFC3339)}
			if err := l.write(); err != nil {
				l.release()
				return nil, err
			}
			return l, nil
		}
		if !errors.Is(err, errStoreLocked) {
			return nil, err
		}
		// A server of this process that is shutting down releases the
		// lock as soon as its shutdown completes: wait for that. If it
		// released it since tryLockStore looked, try again at once.
		released, held := stoppingHolder(key)
		if errors.Is(err, errStoreLockedHere) && !held {
			continue
		}
		if released != nil && time.Now().Before(deadline) {
			select {
			case <-released:
			case <-time.After(time.Until(deadline)):
			}
			continue
		}
		return nil, &StoreInUseError{Dir: dir, Holder: readHolder(path)}
	}
}

// tryLockStore registers and takes the lock without waiting; errStoreLocked
// when another holds it.
func tryLockStore(dir, key, path string) (*storeLock, error) {
	heldStores.Lock()
	defer heldStores.Unlock()
	if heldStores.m[key] != nil {
		return nil, errStoreLockedHere // held in this process (and on platforms without OS locks)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: lock file: %w", dir, err)
	}
	if err := tryLock(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errStoreLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("store directory %s: lock %s: %w", dir, path, err)
	}
	l := &storeLock{dir: dir, key: key, f: f, released: make(chan struct{})}
	heldStores.m[key] = l
	return l, nil
}

// stoppingHolder returns the release channel of the lock this process holds
// on key if its server is shutting down, else nil; held reports whether
// this process holds it at all.
func stoppingHolder(key string) (released <-chan struct{}, held bool) {
	heldStores.Lock()
	l := heldStores.m[key]
	heldStores.Unlock()
	if l == nil {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return nil, false
	}
	if l.srv == nil || l.srv.Running() {
		return nil, true
	}
	return l.released, true
}

// write replaces the lock file's content with l.info.
func (l *storeLock) write() error {
	b, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := l.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("store directory %s: write lock file: %w", l.dir, err)
	}
	if err := l.f.Truncate(int64(len(b))); err != nil {
		return fmt.Errorf("store directory %s: write lock file: %w", l.dir, err)
	}
	return nil
}

// running records the started server and its client URL, and releases the
// lock once the server has shut down, however it is stopped.
func (l *storeLock) running(s *server.Server) error {
	l.mu.Lock()
	l.srv = s
	l.mu.Unlock()
	l.info.URL = s.ClientURL()
	err := l.write()
	go func() {
		s.WaitForShutdown()
		l.release()
	}()
	return err
}

// ShutdownEmbedded shuts down a server StartEmbedded started, waits for
// it, and releases its store directory's lock before returning. (Shutdown
// and WaitForShutdown alone release it just after, on another goroutine: a
// process that exits at once would leave its record in the lock file,
// which is harmless, as only the OS lock counts.)
func ShutdownEmbedded(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
	heldStores.Lock()
	var held []*storeLock
	for _, l := range heldStores.m {
		held = append(held, l)
	}
	heldStores.Unlock()
	for _, l := range held { // l.mu after heldStores, never within it: release takes them the other way
		l.mu.Lock()
		mine := l.srv == s
		l.mu.Unlock()
		if mine {
			l.release()
		}
	}
}

// release empties the lock file (it stays: removing it would let two
// processes lock two different files of the same name), drops the lock and
// unregisters it. It may be called more than once.
func (l *storeLock) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	_ = l.f.Truncate(0)
	_ = unlock(l.f)
	_ = l.f.Close()
	heldStores.Lock()
	if heldStores.m[l.key] == l {
		delete(heldStores.m, l.key)
	}
	heldStores.Unlock()
	close(l.released)
}

// readHolder reads what a lock file says about its holder, as text safe to
// print; the zero StoreHolder when it says nothing readable.
func readHolder(path string) StoreHolder {
	f, err := os.Open(path)
	if err != nil {
		return StoreHolder{}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHolderBytes))
	if err != nil {
		return StoreHolder{}
	}
	return parseHolder(b)
}

// parseHolder decodes a lock file's content, which anyone able to write the
// store directory controls: every string is stripped of characters that
// could drive a terminal or garble a log line, and bounded.
func parseHolder(b []byte) StoreHolder {
	var info lockInfo
	if len(b) > maxHolderBytes || json.Unmarshal(b, &info) != nil {
		return StoreHolder{}
	}
	h := StoreHolder{URL: printable(info.URL, 256), Host: printable(info.Host, 64)}
	if info.PID > 0 {
		h.PID = info.PID
	}
	if t, err := time.Parse(time.RFC3339, printable(info.Since, 64)); err == nil {
		h.Since = t
	}
	// A URL is one token: anything after a space is not part of it.
	if i := strings.IndexByte(h.URL, ' '); i >= 0 {
		h.URL = h.URL[:i]
	}
	return h
}

// printable returns s without the characters task.UnsafeRune rejects (C0
// and C1 controls, DEL, bidi controls, line separators) and without bytes
// that are not UTF-8, cut to at most max bytes on a character boundary.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || task.UnsafeRune(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
