package task

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"iter"
)

// LineError is a JSON Lines input line that is not a task envelope.
type LineError struct {
	Line int
	Err  error
}

// Error implements error.
func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the cause.
func (e *LineError) Unwrap() error { return e.Err }

// ReadLines reads JSON Lines of task envelopes (the JSON wire format, one
// per line; blank lines are skipped). It yields each envelope, or a
// *LineError for a line that does not decode, and keeps going; a read error
// ends the sequence. Lines may be up to maxLine bytes (0 means 8 MiB).
func ReadLines(r io.Reader, maxLine int) iter.Seq2[*Envelope, error] {
	if maxLine <= 0 {
		maxLine = 8 << 20
	}
	return func(yield func(*Envelope, error) bool) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), maxLine)
		n := 0
		for sc.Scan() {
			n++
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			env, err := DecodeJSON(line)
			if err != nil {
				if !yield(nil, &LineError{Line: n, Err: err}) {
					return
				}
				continue
			}
			if !yield(env, nil) {
				return
			}
		}
		if err := sc.Err(); err != nil {
			yield(nil, &LineError{Line: n + 1, Err: err})
		}
	}
}
