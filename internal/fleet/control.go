package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
)

// The control channel: operators write commands to the circuit breakers
// of a durable consumer's processes (producer breaker open|close) into the
// Key-Value bucket ControlBucket, and every consumer process watches the
// keys that concern it and acts on each new command within a second.
// Keys are <task stream>.<durable consumer>.all for every process and
// <task stream>.<durable consumer>.process.<process ID> for one, each
// token made Key-Value-safe (kvToken); the value is a Command in JSON.
// The bucket keeps one value per key, for ControlMaxAge.

// ControlBucket is the Key-Value bucket of operators' commands to the
// circuit breakers.
const ControlBucket = "nodeq_control"

// Operations of a Command.
const (
	// OpOpen opens the breaker by hand until the command's Until: no task
	// starts and no probe runs before then.
	OpOpen = "open"
	// OpClose closes (resets) the breaker at once, ending a manual open.
	OpClose = "close"
)

// Bounds on commands: anyone with write access to the bucket can write
// any entry, so a reader bounds what it takes from one as well.
const (
	// MaxManualOpen is the longest a command keeps a breaker open,
	// counted from when the server stored the command.
	MaxManualOpen = resilience.MaxForcedOpen
	// ControlMaxAge is how long the bucket keeps a command: the longest
	// manual open and a margin. A command older than that is gone.
	ControlMaxAge = MaxManualOpen + time.Hour
	// MaxCommandValue is the largest command value, in bytes: the bucket
	// refuses larger ones, and a reader ignores them.
	MaxCommandValue = 4 << 10
	// MaxProcessID, MaxBy and MaxReason bound, in bytes, a process ID, who
	// asked and why.
	MaxProcessID = 256
	MaxBy        = 128
	MaxReason    = 512
	// maxCommandID bounds a command's ID as a reader takes it.
	maxCommandID = 64
)

// Command is an operator's command to the circuit breakers: the JSON
// value of a control entry, e.g.
//
//	{"op":"open","until":"2026-11-30T10:15:00Z","by":"alice@ops-1","reason":"db maintenance","at":"2026-11-30T10:05:00Z","id":"Lbk0mgqQKnguSccXoPixKJ"}
type Command struct {
	// Op is OpOpen or OpClose.
	Op string `json:"op"`
	// Until is when a manual open ends (the breaker then probes as after
	// any open); zero for a close.
	Until time.Time `json:"until,omitzero"`
	// By is who asked (user@host), Reason why; both are logged.
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// At is when it was written, by the writer's clock.
	At time.Time `json:"at"`
	// ID names the command (a NUID): a process acts on each ID once.
	ID string `json:"id"`
}

// Check validates a command before it is written at now: a known
// operation; for an open, an Until after now and at most MaxManualOpen
// later; for a close, none; who asked named; who and why short and free
// of control characters.
func (c Command) Check(now time.Time) error {
	switch c.Op {
	case OpOpen:
		if !c.Until.After(now) {
			return fmt.Errorf("open until %s: not in the future", c.Until.UTC().Format(time.RFC3339))
		}
		if c.Until.After(now.Add(MaxManualOpen)) {
			return fmt.Errorf("open until %s: more than %v from now", c.Until.UTC().Format(time.RFC3339), MaxManualOpen)
		}
	case OpClose:
		if !c.Until.IsZero() {
			return errors.New("a close has no until")
		}
	default:
		return fmt.Errorf("operation %q: want %s or %s", cleanText(c.Op, 16), OpOpen, OpClose)
	}
	if c.By == "" {
		return errors.New("who asked (by) is empty")
	}
	if err := CheckText("by", c.By, MaxBy); err != nil {
		return err
	}
	return CheckText("reason", c.Reason, MaxReason)
}

// CheckText checks a free-text field of a command (named what): at most
// max bytes of UTF-8 without control, format (bidi) or separator
// characters other than the space.
func CheckText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not UTF-8", what)
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) {
			return fmt.Errorf("%s %q has a control or invisible character (%U)", what, s, r)
		}
	}
	return nil
}

// CheckProcessID checks a process ID that a command names: not empty, and
// as CheckText says.
func CheckProcessID(id string) error {
	if id == "" {
		return errors.New("the process ID is empty")
	}
	return CheckText("process ID", id, MaxProcessID)
}

// controlPrefix is the start of the keys of n's durable consumer, dot included.
func controlPrefix(n queue.Names) string {
	return kvToken(n.TaskStream) + "." + kvToken(n.Consumer) + "."
}

// ControlKey is the key of the commands to one process of n's durable
// consumer, or to every process when process is "".
func ControlKey(n queue.Names, process string) string {
	if process == "" {
		return controlPrefix(n) + "all"
	}
	return controlPrefix(n) + "process." + kvToken(process)
}

// ControlConfig is the configuration of the control bucket.
func ControlConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: ControlBucket, Description: "nodeq operators' commands to the circuit breakers (producer breaker)",
		History: 1, TTL: ControlMaxAge, MaxValueSize: MaxCommandValue, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
}

// SendCommand stores cmd for one process of n's durable consumer, or for
// every process when process is "", after checking it (Check,
// CheckProcessID) and giving it an ID and the time. It creates the
// bucket if there is none, with the replicas of the task stream, and
// then waits a little over controlRecheck before writing: the consumers,
// which look for the bucket that often while there is none, then follow
// it before the command comes, and act on it at once. It returns the
// command as stored and its key.
func SendCommand(ctx context.Context, js jetstream.JetStream, n queue.Names, process string, cmd Command) (Command, string, error) {
	if err := cmd.Check(time.Now()); err != nil {
		return Command{}, "", err
	}
	if process != "" {
		if err := CheckProcessID(process); err != nil {
			return Command{}, "", err
		}
	}
	cmd.Until = cmd.Until.UTC()
	kv, created, err := ensureControl(ctx, js, n)
	if err != nil {
		return Command{}, "", err
	}
	if created {
		select {
		case <-ctx.Done():
			return Command{}, "", ctx.Err()
		case <-time.After(controlRecheck + controlRecheck/2):
		}
	}
	cmd.At, cmd.ID = time.Now().UTC(), nuid.Next()
	b, err := json.Marshal(cmd)
	if err != nil {
		return Command{}, "", fmt.Errorf("encode the command: %w", err)
	}
	key := ControlKey(n, process)
	if _, err := kv.Put(ctx, key, b); err != nil {
		return Command{}, "", fmt.Errorf("write %s in bucket %s: %w", key, ControlBucket, err)
	}
	return cmd, key, nil
}

// ensureControl opens the control bucket, creating it if there is none
// (created says so).
func ensureControl(ctx context.Context, js jetstream.JetStream, n queue.Names) (kv jetstream.KeyValue, created bool, err error) {
	kv, err = bindControl(ctx, js)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, false, err
	}
	replicas := 1
	if s, err := js.Stream(ctx, n.TaskStream); err == nil {
		replicas = s.CachedInfo().Config.Replicas
	}
	err = queue.CallAPI(ctx, js, "STREAM.CREATE.KV_"+ControlBucket, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateKeyValue(ctx, ControlConfig(replicas))
		return err
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = bindControl(ctx, js) // another operator was faster
		return kv, true, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create bucket %s: %w (docs/security.md, Least privilege)", ControlBucket, err)
	}
	return kv, true, nil
}

// bindControl opens the control bucket; jetstream.ErrBucketNotFound when
// there is none.
func bindControl(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := queue.CallAPI(ctx, js, "STREAM.INFO.KV_"+ControlBucket, func(ctx context.Context) error {
		var err error
		kv, err = js.KeyValue(ctx, ControlBucket)
		return err
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		err = fmt.Errorf("bucket %s: %w", ControlBucket, err)
	}
	return kv, err
}

// Order is a command as a consumer process received it: decoded and
// bounded, with where it came from.
type Order struct {
	Command
	// Fleet says the command is for every process of the durable
	// consumer; otherwise it is for this process alone.
	Fleet bool
	// Key and Revision are the entry's; Stored is when the server stored it.
	Key      string
	Revision uint64
	Stored   time.Time
}

// readOrder decodes and bounds a control entry: a value larger than
// MaxCommandValue, not JSON, with an unknown operation, or an open
// without an until is an error; an open ends at most MaxManualOpen after
// the server stored it (the server's timestamp, not the writer's); who,
// why and the ID are cut and their control characters escaped, ready to
// be logged.
func readOrder(entry jetstream.KeyValueEntry, fleetKey string) (Order, error) {
	v := entry.Value()
	if len(v) > MaxCommandValue {
		return Order{}, fmt.Errorf("%d bytes, more than %d", len(v), MaxCommandValue)
	}
	var c Command
	if err := json.Unmarshal(v, &c); err != nil {
		return Order{}, fmt.Errorf("not a command: %s", cleanText(err.Error(), 200))
	}
	switch {
	case c.Op != OpOpen && c.Op != OpClose:
		return Order{}, fmt.Errorf("unknown operation %q (want %s or %s)", cleanText(c.Op, 16), OpOpen, OpClose)
	case c.Op == OpOpen && c.Until.IsZero():
		return Order{}, errors.New("an open without until")
	}
	stored := entry.Created()
	if latest := stored.Add(MaxManualOpen); c.Until.After(latest) {
		c.Until = latest
	}
	if c.Op == OpClose {
		c.Until = time.Time{}
	}
	c.By, c.Reason, c.ID = cleanText(c.By, MaxBy), cleanText(c.Reason, MaxReason), cleanText(c.ID, maxCommandID)
	return Order{Command: c, Fleet: entry.Key() == fleetKey, Key: entry.Key(), Revision: entry.Revision(), Stored: stored}, nil
}

// cleanText cuts s to at most n bytes (marking the cut) and escapes
// every byte that is not UTF-8 and every character that is not graphic
// (controls, bidi and other format characters, line separators) as \xNN
// or \uNNNN, so that it can be logged and printed on one line.
func cleanText(s string, n int) string {
	cut := false
	if len(s) > n {
		for back := 0; back < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); back++ {
			n-- // not in the middle of a character
		}
		s, cut = s[:n], true
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case !unicode.IsGraphic(r) && r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsGraphic(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	if cut {
		b.WriteString("…")
	}
	return b.String()
}
