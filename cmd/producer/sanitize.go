package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/nodeq/nodeq/internal/task"
)

// Dead-letter records carry text from whoever published the task: task and
// node IDs, error messages, headers, payloads, stack traces. Printed raw, an
// escape sequence in them would drive the operator's terminal (clear the
// screen, rewrite earlier lines, set the window title, or, with some
// terminals, more), and a bidi control would make the text read other than
// it is. The human output of the dlq commands therefore shows every such
// character as a Go-style escape: ESC as \x1b, CSI (U+009B) as \u009b,
// RIGHT-TO-LEFT OVERRIDE as \u202e, and a byte that is not UTF-8 as \xff.

// dangerous reports whether r must not reach a terminal as itself: C0
// controls, DEL, C1 controls, the bidi controls, and the Unicode line and
// paragraph separators (task.UnsafeRune).
func dangerous(r rune) bool { return task.UnsafeRune(r) }

// clean returns s for one line of terminal output: every dangerous
// character, line breaks and tabs included, and every byte that is not
// UTF-8, is shown escaped. Text without any is returned as is.
func clean(s string) string { return escape(s, false) }

// cleanText is clean for a multi-line field (a stack trace): newlines and
// tabs stay, carriage returns and everything else dangerous are escaped.
func cleanText(s string) string { return escape(s, true) }

func escape(s string, multiline bool) string {
	safe := func(r rune) bool { return !dangerous(r) || multiline && (r == '\n' || r == '\t') }
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !safe(r) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case safe(r):
			b.WriteString(s[i : i+n])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// cleanJSON escapes, inside JSON text produced by encoding/json, the
// characters it leaves raw but a terminal acts on: DEL, C1 controls and the
// bidi and separator characters of dangerous. They are written as \uXXXX,
// so the text stays valid JSON with the same meaning. (encoding/json already
// escapes C0 controls in strings and replaces bytes that are not UTF-8.)
func cleanJSON(b []byte) []byte {
	i := 0
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r >= 0x7f && dangerous(r) {
			break
		}
		i += n
	}
	if i == len(b) {
		return b
	}
	out := bytes.NewBuffer(make([]byte, 0, len(b)+16))
	out.Write(b[:i])
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r >= 0x7f && dangerous(r) && !(r == utf8.RuneError && n == 1) {
			fmt.Fprintf(out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+n])
		}
		i += n
	}
	return out.Bytes()
}

// writeJSON writes v as one line of JSON, like json.Encoder.Encode, with
// cleanJSON applied.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(cleanJSON(b), '\n'))
	return err
}
