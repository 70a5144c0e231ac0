package config

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/worker"
)

// TestDefaultsAreTheLibraries: the defaults the configuration stands for
// are the library packages' own, so that a library's default and the
// consumer's cannot drift apart.
func TestDefaultsAreTheLibraries(t *testing.T) {
	cfg := Default()
	if got, want := cfg.RetryPolicy(), resilience.DefaultPolicy(); !reflect.DeepEqual(got, want) {
		t.Errorf("retry %+v, resilience.DefaultPolicy %+v", got, want)
	}
	if got, want := cfg.RedeliveryPolicy(), resilience.DefaultRedelivery(); !reflect.DeepEqual(got, want) {
		t.Errorf("redelivery %+v, resilience.DefaultRedelivery %+v", got, want)
	}
	bs, on := cfg.BreakerSettings()
	if !on || bs.Cooldown != resilience.DefaultCooldown || bs.MaxCooldown != resilience.DefaultMaxCooldown {
		t.Errorf("breaker on=%v cooldown %v..%v, resilience defaults %v..%v", on, bs.Cooldown, bs.MaxCooldown, resilience.DefaultCooldown, resilience.DefaultMaxCooldown)
	}
	// resilience.NewBreaker's own default trips after 5 consecutive failures.
	if !bs.ReadyToTrip(resilience.Counts{ConsecutiveFailures: 5}) || bs.ReadyToTrip(resilience.Counts{ConsecutiveFailures: 4, Failures: 100}) {
		t.Error("the default breaker must open after 5 consecutive failures, as resilience.NewBreaker's default does")
	}
	if got, want := cfg.QueueNames(), queue.DefaultNames(); got != want || cfg.Names.TaskStream != want.TaskStream || cfg.Names.Consumer != want.Consumer {
		t.Errorf("names %+v, queue.DefaultNames %+v", cfg.Names, want)
	}
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"consumer.ack_wait", cfg.Consumer.AckWait, queue.DefaultAckWait},
		{"consumer.max_ack_pending", cfg.Consumer.MaxAckPending, queue.DefaultMaxAckPending},
		{"consumer.poison_after", cfg.Consumer.PoisonAfter, worker.DefaultPoisonAfter},
		{"consumer.reply_subjects", cfg.Consumer.ReplySubjects, queue.DefaultReplySubjects},
		{"streams.dlq_max_age", cfg.Streams.DLQMaxAge, queue.DefaultDLQMaxAge},
		{"streams.dlq_max_bytes", int64(cfg.Streams.DLQMaxBytes), int64(queue.DefaultDLQMaxBytes)},
		{"dlq.mask_headers", cfg.DLQ.MaskHeaders, dlq.DefaultMaskedHeaders},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %v, the library's default %v", c.key, c.got, c.want)
		}
	}
	process, _ := kindOf("p", Node{Executor: ExecProcess})
	http, _ := kindOf("h", Node{Executor: ExecHTTP})
	if process.resolve(Node{}).MaxOutput != executor.DefaultMaxOutput || http.resolve(Node{}).MaxResponse != executor.DefaultMaxResponse {
		t.Error("process and http nodes must default to the executors' own limits")
	}

	// The defaults are copies: changing a configuration changes no library default.
	cfg.Consumer.ReplySubjects[0], cfg.DLQ.MaskHeaders[0], cfg.Redelivery.Backoff[0] = "changed", "changed", time.Hour
	if queue.DefaultReplySubjects[0] == "changed" || dlq.DefaultMaskedHeaders[0] == "changed" || resilience.DefaultRedelivery().Backoff[0] == time.Hour {
		t.Fatal("Default shares a library's default slice")
	}
	if got := Default(); got.Consumer.ReplySubjects[0] == "changed" {
		t.Fatal("Default shares its slices between calls")
	}
}

// TestBounds: every bound names a numeric key, the defaults are within
// their bounds, and Validate accepts each bound's ends and refuses what is
// just outside, at the key.
func TestBounds(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range bounds {
		if seen[b.key] {
			t.Errorf("%s bounded twice", b.key)
		}
		seen[b.key] = true
		v := Default().lookup(b.key)
		if !b.contains(v) {
			t.Errorf("%s: default %s outside %s", b.key, formatValue(v), b.rangeText(v.Type()))
		}
		step := 1.0
		if v.CanFloat() {
			step = 0.01
		}
		for _, c := range []struct {
			x  float64
			ok bool
		}{{b.min, true}, {b.max, true}, {b.min - step, false}, {b.max + step, false}, {math.NaN(), false}} {
			if math.IsInf(c.x, 0) || (math.IsNaN(c.x) && !v.CanFloat()) {
				continue
			}
			cfg := Default()
			cfg.Consumer.MaxAckPending = math.MaxInt32 // not less than workers + prefetch
			switch field := cfg.lookup(b.key); {
			case field.CanInt():
				field.SetInt(int64(c.x))
			default:
				field.SetFloat(c.x)
			}
			var at []string
			for _, fe := range fieldErrors(t, cfg.Validate()) {
				at = append(at, fe.Field)
			}
			if refused := slices.Contains(at, b.key); refused == c.ok {
				t.Errorf("%s = %v: errors at %v", b.key, c.x, at)
			}
		}
	}
}
