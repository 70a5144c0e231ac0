package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
)

// printStatus's paused line: "until resumed" for an indefinite pause (not
// the year 2126), the end time for a pause with one, "no" otherwise.
func TestPrintStatusPaused(t *testing.T) {
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		st   fleet.Status
		want string
	}{
		{"not paused", fleet.Status{}, "paused                 no\n"},
		{"until resumed", fleet.Status{Paused: true, PausedIndefinitely: true}, "paused                 until resumed\n"},
		{"until a time", fleet.Status{Paused: true, PausedUntil: now.Add(30 * time.Minute)}, "paused                 until 2026-11-29T03:30:00Z\n"},
		{"until a time, not in UTC", fleet.Status{Paused: true, PausedUntil: now.Add(time.Hour).In(time.FixedZone("X", 3600))},
			"paused                 until 2026-11-29T04:00:00Z\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printStatus(&out, &c.st, now); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), c.want) || strings.Contains(out.String(), "2126") {
				t.Fatalf("want %q in\n%s", c.want, out.String())
			}
		})
	}
}
