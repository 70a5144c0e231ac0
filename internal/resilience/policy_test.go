package resilience

import (
	"testing"
	"time"
)

func delays(p Policy) []time.Duration {
	var ds []time.Duration
	for attempt := 1; attempt < 100; attempt++ {
		d, ok := p.NextRetry(attempt)
		if !ok {
			break
		}
		ds = append(ds, d)
	}
	return ds
}

func equal(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPolicies(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		p    Policy
		want []time.Duration
	}{
		{"default: 3 attempts, 100ms then 200ms", DefaultPolicy(), []time.Duration{100 * ms, 200 * ms}},
		{"none", None(), nil},
		{"fixed", Fixed(50*ms, 4), []time.Duration{50 * ms, 50 * ms, 50 * ms}},
		{"exponential capped", &Exponential{Base: 100 * ms, Multiplier: 2, Max: 400 * ms, Attempts: 6}, []time.Duration{100 * ms, 200 * ms, 400 * ms, 400 * ms, 400 * ms}},
		{"multiplier 3", &Exponential{Base: 10 * ms, Multiplier: 3, Max: time.Second, Attempts: 4}, []time.Duration{10 * ms, 30 * ms, 90 * ms}},
	}
	for _, c := range cases {
		if got := delays(c.p); !equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestJitterBounds(t *testing.T) {
	for _, r := range []float64{0, 0.25, 0.5, 0.999} {
		p := &Exponential{Base: 100 * time.Millisecond, Multiplier: 2, Max: 300 * time.Millisecond, Attempts: 5, Jitter: 0.5, Rand: func() float64 { return r }}
		for attempt, base := range []time.Duration{100, 200, 300, 300} {
			base *= time.Millisecond
			d, _ := p.NextRetry(attempt + 1)
			lo := time.Duration(float64(base) * 0.5)
			hi := min(time.Duration(float64(base)*1.5), 300*time.Millisecond)
			if d < lo || d > hi {
				t.Errorf("r=%v attempt %d: %v outside [%v, %v]", r, attempt+1, d, lo, hi)
			}
		}
	}
	lowest := &Exponential{Base: 100 * time.Millisecond, Multiplier: 2, Max: time.Second, Attempts: 2, Jitter: 0.5, Rand: func() float64 { return 0 }}
	if d, _ := lowest.NextRetry(1); d != 50*time.Millisecond {
		t.Errorf("r=0 gives %v, want the lower bound 50ms", d)
	}
}

func TestRedelivery(t *testing.T) {
	r := DefaultRedelivery()
	var got []time.Duration
	for n := 1; ; n++ {
		d, ok := r.Next(n)
		if !ok {
			break
		}
		got = append(got, d)
	}
	if !equal(got, []time.Duration{5 * time.Second, 30 * time.Second}) {
		t.Fatalf("%v", got)
	}
	r = Redelivery{MaxDeliveries: 5, Backoff: []time.Duration{time.Second}}
	if d, ok := r.Next(4); !ok || d != time.Second {
		t.Fatalf("last backoff must repeat: %v %v", d, ok)
	}
	if _, ok := (Redelivery{MaxDeliveries: 1}).Next(1); ok {
		t.Fatal("one delivery allowed a second")
	}
}
