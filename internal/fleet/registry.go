package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// The process registry: every consumer process announces itself in the
// Key-Value bucket ProcessBucket, one entry per process, refreshed every
// few seconds and removed when it stops cleanly. The bucket's TTL (its
// streams's max age) removes the entry of a process that died; readers
// also ignore an entry older than the TTL that the server still has.
// An Announcer writes a process's entry; ListProcesses reads them.

// ProcessBucket is the Key-Value bucket of the process registry. A key is
// <task stream>.<durable consumer>.<process ID>, each token made
// Key-Value-safe (see kvToken).
const ProcessBucket = "nodeq_processes"

// DefaultProcessTTL is the TTL of the bucket an Announcer creates: a
// process that died drops out of the registry after at most this long.
const DefaultProcessTTL = 30 * time.Second

// DefaultRefresh is how often an Announcer rewrites its entry, at the
// latest; never less often than three times per TTL.
const DefaultRefresh = 5 * time.Second

// Bounds on what the registry holds and what a reader takes from it:
// anyone with write access to the bucket can write any entry.
const (
	// MaxProcesses is how many entries ListProcesses returns at most.
	MaxProcesses = 1000
	// maxScanned is how many entries it reads at most; the rest are
	// counted as left out, unread.
	maxScanned = 4 * MaxProcesses
	// MaxProcessValue is the largest entry value, in bytes: a larger one
	// is malformed (and the bucket an Announcer creates refuses it).
	MaxProcessValue = 8 << 10
	// MaxNodeTypes is how many node types an entry lists; the others are
	// counted in MoreNodeTypes.
	MaxNodeTypes = 32
	// maxNodeType, maxText and maxWord bound a node type, a free-text
	// field (ID, host, version) and a one-word field (breaker scope and
	// state), in bytes.
	maxNodeType = 64
	maxText     = 256
	maxWord     = 32
	// maxKeyID bounds the bytes of a process ID that go into its key
	// (kvToken may triple them); IDs differ in their start already.
	maxKeyID = 128
	// maxCount bounds every count an entry states.
	maxCount = 1 << 20
	// minProcessTTL and maxProcessTTL bound the TTL read from the bucket's
	// configuration; 0 (no TTL) means DefaultProcessTTL.
	minProcessTTL = time.Second
	maxProcessTTL = 10 * time.Minute
)

// ProcessInfo is one process's entry in the registry: the JSON value of
// its Key-Value entry. Every string in it comes from a shared bucket:
// escape it before printing it to a terminal.
type ProcessInfo struct {
	// ID names the process in the fleet (host/pid/random suffix); with
	// breaker.scope fleet it is also its name in the breaker's entries.
	ID   string `json:"id"`
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// Version is the nodeq version it runs.
	Version string `json:"version"`
	// Stream and Consumer are the task stream and durable consumer it
	// pulls from (a reader sets them from the names it listed).
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Started is when it began to run, by its own clock.
	Started time.Time `json:"started"`
	// LastSeen is when the server stored the entry (a reader sets it; the
	// writer's own clock is not trusted for it).
	LastSeen time.Time `json:"last_seen"`
	// NodeTypes lists the node types it runs, at most MaxNodeTypes;
	// MoreNodeTypes counts those not listed.
	NodeTypes     []string `json:"node_types"`
	MoreNodeTypes int      `json:"more_node_types,omitempty"`
	// Workers and Prefetch are its consumer.workers and consumer.prefetch.
	Workers  int `json:"workers"`
	Prefetch int `json:"prefetch"`
	// InFlight tasks run now; Prefetched tasks are delivered and wait for
	// a worker; DLQHeld tasks are held with their outcome because the
	// dead-letter stream refused their records.
	InFlight   int `json:"in_flight"`
	Prefetched int `json:"prefetched"`
	DLQHeld    int `json:"dlq_held"`
	// Breaker is its circuit breaker.
	Breaker ProcessBreaker `json:"breaker"`
	// Paused is set while it pulls nothing: its breaker is open, or the
	// fleet is paused on the server (producer pause, a fleet breaker).
	Paused bool `json:"paused"`
	// Stopping is set once it began to shut down: it pulls nothing more
	// and finishes the tasks it holds.
	Stopping bool `json:"stopping,omitempty"`
}

// ProcessBreaker is a process's circuit breaker in its registry entry.
type ProcessBreaker struct {
	// Scope is "process", "fleet" or "off" (no breaker configured).
	Scope string `json:"scope"`
	// State is "closed", "open" or "half-open"; empty when Scope is "off".
	State string `json:"state,omitempty"`
	// Since is when it entered State (or the process started, if it has
	// been in it since).
	Since time.Time `json:"since,omitzero"`
	// Until is when an open breaker's cooldown ends.
	Until time.Time `json:"until,omitzero"`
}

// kvToken makes s usable as one token of a Key-Value key, whose
// characters are limited to [-/_=.a-zA-Z0-9]: any other byte (the dot,
// the slash and the wildcards included) becomes =XX (hex), as the
// delivery ledger's keys do.
func kvToken(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			out = append(out, c)
			continue
		}
		out = fmt.Appendf(out, "=%02X", c)
	}
	return string(out)
}

// processPrefix is the start of the keys of the processes pulling from
// the durable consumer n names, dot included.
func processPrefix(n queue.Names) string {
	return kvToken(n.TaskStream) + "." + kvToken(n.Consumer) + "."
}

// processKey is the key of process id's entry.
func processKey(n queue.Names, id string) string {
	return processPrefix(n) + kvToken(clip(id, maxKeyID))
}

// clip cuts s to at most n bytes on a rune boundary and makes it valid
// UTF-8 (a byte that is not becomes U+FFFD, and the result is cut again).
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1] // a rune cut in two
	}
	return s
}

// bound clamps a count to [0, maxCount].
func bound(n int) int { return min(max(n, 0), maxCount) }

// bounded returns p with every string clipped, at most MaxNodeTypes node
// types and every count clamped, so that its JSON stays under
// MaxProcessValue. Both the writer and the readers apply it.
func (p ProcessInfo) bounded() ProcessInfo {
	p.ID, p.Host, p.Version = clip(p.ID, maxText), clip(p.Host, maxText), clip(p.Version, maxText)
	p.Stream, p.Consumer = clip(p.Stream, maxText), clip(p.Consumer, maxText)
	p.PID = min(max(p.PID, 0), math.MaxInt32)
	p.MoreNodeTypes = bound(p.MoreNodeTypes)
	if extra := len(p.NodeTypes) - MaxNodeTypes; extra > 0 {
		p.MoreNodeTypes = bound(p.MoreNodeTypes + extra)
		p.NodeTypes = p.NodeTypes[:MaxNodeTypes]
	}
	types := make([]string, len(p.NodeTypes))
	for i, t := range p.NodeTypes {
		types[i] = clip(t, maxNodeType)
	}
	p.NodeTypes = types
	p.Workers, p.Prefetch = bound(p.Workers), bound(p.Prefetch)
	p.InFlight, p.Prefetched, p.DLQHeld = bound(p.InFlight), bound(p.Prefetched), bound(p.DLQHeld)
	p.Breaker.Scope, p.Breaker.State = clip(p.Breaker.Scope, maxWord), clip(p.Breaker.State, maxWord)
	return p
}

// errNotProcess marks an entry that is not a readable process entry.
var errNotProcess = errors.New("not a process entry")

// readProcess decodes and bounds one entry of the registry listed under
// names n: an entry larger than MaxProcessValue, not JSON, without an ID,
// or whose key is not its ID's is malformed. LastSeen becomes the
// server's timestamp of the entry, Stream and Consumer the listed names,
// and the times it states are kept within what the server saw.
func readProcess(entry jetstream.KeyValueEntry, n queue.Names) (ProcessInfo, error) {
	fail := func(why string) (ProcessInfo, error) {
		return ProcessInfo{}, fmt.Errorf("%w: %s (revision %d): %s", errNotProcess, clip(entry.Key(), maxText), entry.Revision(), why)
	}
	v := entry.Value()
	if len(v) > MaxProcessValue {
		return fail(fmt.Sprintf("%d bytes, more than %d", len(v), MaxProcessValue))
	}
	var p ProcessInfo
	if err := json.Unmarshal(v, &p); err != nil {
		return fail("not JSON: " + clip(err.Error(), maxText))
	}
	if p.ID == "" {
		return fail("no id")
	}
	if entry.Key() != processKey(n, p.ID) {
		return fail("its key is not its id's")
	}
	p = p.bounded()
	p.Stream, p.Consumer = n.TaskStream, n.Consumer
	p.LastSeen = entry.Created().UTC()
	p.Started = notAfter(p.Started, p.LastSeen)
	p.Breaker.Since = notAfter(p.Breaker.Since, p.LastSeen)
	if latest := p.LastSeen.Add(statusMaxCooldown); p.Breaker.Until.After(latest) {
		p.Breaker.Until = latest
	}
	if p.Breaker.Until.Before(p.LastSeen.Add(-statusMaxCooldown)) {
		p.Breaker.Until = time.Time{} // nonsense
	}
	return p, nil
}

// notAfter returns t, or latest when t is later; UTC.
func notAfter(t, latest time.Time) time.Time {
	if t.After(latest) {
		return latest
	}
	return t.UTC()
}

// processTTL is the registry's TTL as a bucket with max age ttl has it:
// bounded, and DefaultProcessTTL when the bucket has none.
func processTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return DefaultProcessTTL
	}
	return min(max(ttl, minProcessTTL), maxProcessTTL)
}

// processBucketConfig is the configuration of the bucket an Announcer
// creates when there is none.
func processBucketConfig(ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: ProcessBucket, Description: "nodeq process registry: one entry per live consumer process",
		History: 1, TTL: ttl, MaxValueSize: MaxProcessValue, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// MemberID is this instance's name in the fleet's entries (the Owner of
// the breaker states it writes), and its ID in the process registry.
func (f *Breaker) MemberID() string { return f.id }
