package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/queue"
)

// TestCommandCheck: what an operator may write, before anything connects.
func TestCommandCheck(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	open := func(d time.Duration) Command { return Command{Op: OpOpen, Until: now.Add(d), By: "alice@ops-1"} }
	with := func(c Command, f func(*Command)) Command { f(&c); return c }
	for _, c := range []struct {
		name string
		cmd  Command
		want string // "" for valid
	}{
		{"open for 10m", open(10 * time.Minute), ""},
		{"open for the longest", open(MaxManualOpen), ""},
		{"close", Command{Op: OpClose, By: "bob"}, ""},
		{"a reason with spaces and accents", with(open(time.Minute), func(c *Command) { c.Reason = "DB maintenance — ticket #42, zürich" }), ""},
		{"open in the past", open(-time.Second), "not in the future"},
		{"open now", open(0), "not in the future"},
		{"open for longer than the bound", open(MaxManualOpen + time.Second), "more than 24h0m0s"},
		{"open in year 9999", Command{Op: OpOpen, Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), By: "x"}, "more than"},
		{"close with an until", Command{Op: OpClose, Until: now.Add(time.Minute), By: "x"}, "a close has no until"},
		{"unknown op", Command{Op: "reboot", By: "x"}, `operation "reboot"`},
		{"empty op", Command{By: "x"}, `operation ""`},
		{"nobody asked", Command{Op: OpClose}, "by) is empty"},
		{"who with an escape", Command{Op: OpClose, By: "eve\x1b[2J"}, "control or invisible character (U+001B)"},
		{"why with a bidi override", Command{Op: OpClose, By: "x", Reason: "fine\u202eenif"}, "(U+202E)"},
		{"why with a newline", Command{Op: OpClose, By: "x", Reason: "a\nb"}, "(U+000A)"},
		{"why not UTF-8", Command{Op: OpClose, By: "x", Reason: "\xff"}, "not UTF-8"},
		{"who too long", Command{Op: OpClose, By: strings.Repeat("a", MaxBy+1)}, "more than 128"},
		{"why too long", Command{Op: OpClose, By: "x", Reason: strings.Repeat("a", MaxReason+1)}, "more than 512"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cmd.Check(now)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Check: %v; want an error with %q", err, c.want)
			}
		})
	}
	for _, id := range []string{"", strings.Repeat("h", MaxProcessID+1), "host/1\x00", "host/\u2028"} {
		if err := CheckProcessID(id); err == nil {
			t.Errorf("CheckProcessID(%q) accepted it", id)
		}
	}
	if err := CheckProcessID("ip-10-0-0-7.ec2.internal/4242/Xq3b9aZk"); err != nil {
		t.Errorf("a real process ID: %v", err)
	}
}

// TestControlKey: one key for every process, one per process; process IDs
// with dots, slashes and wildcards stay one token and never reach "all".
func TestControlKey(t *testing.T) {
	n := queue.DefaultNames()
	cases := map[string]string{
		"":           "NODEQ_TASKS.nodeq-workers.all",
		"all":        "NODEQ_TASKS.nodeq-workers.process.all",
		"host/42":    "NODEQ_TASKS.nodeq-workers.process.host=2F42",
		"a.b/*/>":    "NODEQ_TASKS.nodeq-workers.process.a=2Eb=2F=2A=2F=3E",
		"h 1\x1b[2J": "NODEQ_TASKS.nodeq-workers.process.h=201=1B=5B2J",
	}
	for process, want := range cases {
		if got := ControlKey(n, process); got != want {
			t.Errorf("ControlKey(%q) = %q, want %q", process, got, want)
		}
	}
}

// ctlEntry is a control entry as the server would hand it over.
type ctlEntry struct {
	key     string
	value   string
	rev     uint64
	created time.Time
	op      jetstream.KeyValueOp
}

func (e ctlEntry) Bucket() string                  { return ControlBucket }
func (e ctlEntry) Key() string                     { return e.key }
func (e ctlEntry) Value() []byte                   { return []byte(e.value) }
func (e ctlEntry) Revision() uint64                { return e.rev }
func (e ctlEntry) Created() time.Time              { return e.created }
func (e ctlEntry) Delta() uint64                   { return 0 }
func (e ctlEntry) Operation() jetstream.KeyValueOp { return e.op }

// TestReadOrder: a reader bounds what it takes from a hand-written entry:
// malformed ones are errors; the open period, who, why and the ID are
// bounded and made safe to log.
func TestReadOrder(t *testing.T) {
	n := queue.DefaultNames()
	all, one := ControlKey(n, ""), ControlKey(n, "h/1")
	stored := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	read := func(key, value string) (Order, error) {
		return readOrder(ctlEntry{key: key, value: value, rev: 7, created: stored, op: jetstream.KeyValuePut}, all)
	}
	for _, c := range []struct{ name, value, want string }{
		{"garbage", "\x00\x01not json", "not a command"},
		{"a JSON string", `"open"`, "not a command"},
		{"huge", `{"op":"close","by":"x","reason":"` + strings.Repeat("a", MaxCommandValue) + `"}`, "more than 4096"},
		{"unknown op", `{"op":"explode","by":"x"}`, `unknown operation "explode"`},
		{"no op", `{"by":"x"}`, `unknown operation ""`},
		{"a long op", `{"op":"` + strings.Repeat("o", 100) + `"}`, `unknown operation "oooooooooooooooo…"`},
		{"an open without until", `{"op":"open","by":"x"}`, "an open without until"},
		{"an until that is no time", `{"op":"open","until":"tomorrow","by":"x"}`, "not a command"},
	} {
		if _, err := read(all, c.value); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error with %q", c.name, err, c.want)
		}
	}

	o, err := read(all, `{"op":"open","until":"9999-12-31T23:59:59Z","by":"eve\u001b]0;pwned\u0007","reason":"`+strings.Repeat("é", MaxReason)+`","id":"x\u202ey","at":"2026-11-30T09:59:59Z"}`)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Until.Equal(stored.Add(MaxManualOpen)) || !o.Fleet || o.Revision != 7 || !o.Stored.Equal(stored) {
		t.Fatalf("year 9999: %+v; want open until %v, for the fleet", o, stored.Add(MaxManualOpen))
	}
	if o.By != `eve\x1b]0;pwned\x07` || o.ID != `x\u202ey` {
		t.Fatalf("by %q, id %q: control characters not escaped", o.By, o.ID)
	}
	if !strings.HasSuffix(o.Reason, "…") || len(o.Reason) > MaxReason+len("…") || strings.ContainsRune(o.Reason, '\uFFFD') {
		t.Fatalf("reason of %d bytes, cut to %d: %q", 2*MaxReason, len(o.Reason), o.Reason[len(o.Reason)-8:])
	}

	o, err = read(one, `{"op":"close","until":"2026-11-30T11:00:00Z","by":"bob","id":"c1","extra":{"ignored":true}}`)
	if err != nil {
		t.Fatal(err)
	}
	if o.Fleet || o.Op != OpClose || !o.Until.IsZero() || o.By != "bob" || o.Key != one {
		t.Fatalf("a close for one process: %+v", o)
	}
}

// TestCleanText: text from the bucket is cut on a character boundary and
// its dangerous characters escaped.
func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":        "plain text",
		"tab\there":         `tab\x09here`,
		"\x1b[31mred":       `\x1b[31mred`,
		"rtl\u202eoverride": `rtl\u202eoverride`,
		"line\u2028sep":     `line\u2028sep`,
		"bad\xffbyte":       `bad\xffbyte`,
		`back\slash`:        `back\\slash`,
		"c1\u009bcsi":       `c1\u009bcsi`,
	} {
		if got := cleanText(in, 100); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cleanText("ab€cd", 4); got != "ab…" { // € is 3 bytes: not cut in two
		t.Errorf("cut: %q", got)
	}
}
