package fleet

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestIndefinite(t *testing.T) {
	for _, c := range []struct {
		remaining time.Duration
		want      bool
	}{
		{0, false},
		{time.Hour, false},
		{10 * 365 * 24 * time.Hour, false}, // a long pause with an end is still one
		{Forever/2 + time.Second, true},
		{Forever, true},
	} {
		if got := Indefinite(c.remaining); got != c.want {
			t.Errorf("Indefinite(%v) = %v, want %v", c.remaining, got, c.want)
		}
	}
}

// GetStatus on a real server: a pause until resumed has no end time
// (not the year 2126) and says so; a pause with an end has its end; a
// resumed fleet has neither. The JSON follows.
func TestGetStatusPause(t *testing.T) {
	e := newFleetEnv(t)
	ctx := context.Background()
	status := func() (*Status, string) {
		t.Helper()
		st, err := GetStatus(ctx, e.js, e.names)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return st, string(b)
	}

	if err := Pause(ctx, e.js, e.names, time.Now().Add(Forever)); err != nil {
		t.Fatal(err)
	}
	st, js := status()
	if !st.Paused || !st.PausedIndefinitely || !st.PausedUntil.IsZero() {
		t.Fatalf("paused until resumed: %+v", st)
	}
	if !strings.Contains(js, `"paused":true`) || !strings.Contains(js, `"paused_indefinitely":true`) || strings.Contains(js, "paused_until") {
		t.Fatalf("paused until resumed, JSON: %s", js)
	}

	end := time.Now().Add(time.Hour)
	if err := Pause(ctx, e.js, e.names, end); err != nil {
		t.Fatal(err)
	}
	st, js = status()
	if !st.Paused || st.PausedIndefinitely || st.PausedUntil.Before(end.Add(-time.Minute)) || st.PausedUntil.After(end.Add(time.Minute)) {
		t.Fatalf("paused for an hour (until %v): %+v", end, st)
	}
	if !strings.Contains(js, `"paused_until":"`) || strings.Contains(js, "paused_indefinitely") {
		t.Fatalf("paused for an hour, JSON: %s", js)
	}

	if err := Resume(ctx, e.js, e.names); err != nil {
		t.Fatal(err)
	}
	st, js = status()
	if st.Paused || st.PausedIndefinitely || !st.PausedUntil.IsZero() {
		t.Fatalf("resumed: %+v", st)
	}
	if !strings.Contains(js, `"paused":false`) || strings.Contains(js, "paused_until") || strings.Contains(js, "paused_indefinitely") {
		t.Fatalf("resumed, JSON: %s", js)
	}
}
