package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
)

func TestDefaultsValid(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := cfg.Registry()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Types(), ","); got != "echo,fault,sleep" {
		t.Fatalf("default node types %s", got)
	}
}

func TestParseFull(t *testing.T) {
	yml := `
nats:
  url: nats://a:4222
consumer:
  workers: 16
  ack_wait: 1m
  max_payload: 2MiB
streams:
  dlq_max_bytes: 10GiB
nodes:
  resize:
    executor: process
    command: ["/bin/cat"]
    timeout: 30s
    concurrency: 2
  notify:
    executor: http
    url: http://localhost:8080/hook
    timeout: 5s
  echo: {}
`
	cfg, err := Parse("nodeq.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Consumer.Workers != 16 || cfg.Consumer.AckWait != time.Minute || cfg.Consumer.MaxPayload != 2<<20 || cfg.Streams.DLQMaxBytes != 10<<30 {
		t.Fatalf("%+v %+v", cfg.Consumer, cfg.Streams)
	}
	if cfg.Consumer.ShutdownTimeout != 30*time.Second {
		t.Fatal("unset keys must keep their defaults")
	}
	r, err := cfg.Registry()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Types(), ","); got != "echo,notify,resize" {
		t.Fatalf("a nodes section replaces the defaults; got %s", got)
	}
	n, _ := r.Lookup("resize")
	if n.Concurrency != 2 || n.Timeout != 30*time.Second {
		t.Fatalf("%+v", n)
	}
}

func TestErrorsNameFileLineField(t *testing.T) {
	cases := []struct {
		name, yml string
		want      []string // each must appear in the error
	}{
		{"syntax", "consumer:\n  workers: [\n", []string{"bad.yaml:", "line"}},
		{"unknown key", "consumer:\n  wrokers: 3\n", []string{"bad.yaml:2: consumer.wrokers: unknown key"}},
		{"wrong type", "consumer:\n  workers: many\n", []string{"bad.yaml:2: consumer.workers:", "many"}},
		{"bad duration", "consumer:\n  ack_wait: soon\n", []string{"bad.yaml:2: consumer.ack_wait:"}},
		{"bad size", "consumer:\n  max_payload: 3 parsecs\n", []string{"bad.yaml:2: consumer.max_payload:", "size"}},
		{"range", "consumer:\n  workers: 0\n", []string{"bad.yaml:2: consumer.workers: 0 is outside 1..10000"}},
		{"process without command", "nodes:\n  resize:\n    executor: process\n    timeout: 1s\n", []string{"bad.yaml:2: nodes.resize.command: required"}},
		{"missing binary", "nodes:\n  resize:\n    executor: process\n    command: [/no/such/tool]\n    timeout: 1s\n", []string{"bad.yaml:4: nodes.resize.command:", "/no/such/tool"}},
		{"http without timeout", "nodes:\n  hook:\n    executor: http\n    url: http://x/y\n", []string{"bad.yaml:2: nodes.hook.timeout: required"}},
		{"bad url", "nodes:\n  hook:\n    executor: http\n    url: ftp://x\n    timeout: 1s\n", []string{"bad.yaml:4: nodes.hook.url:"}},
		{"no executor", "nodes:\n  resize:\n    timeout: 1s\n", []string{"bad.yaml:2: nodes.resize.executor: required"}},
		{"unknown executor", "nodes:\n  r:\n    executor: lambda\n", []string{"bad.yaml:3: nodes.r.executor: unknown executor \"lambda\""}},
		{"misplaced field", "nodes:\n  echo:\n    url: http://x\n", []string{"bad.yaml:3: nodes.echo.url: only applies to executor http"}},
		{"bad node name", "nodes:\n  a.b: {executor: echo}\n", []string{"bad.yaml:2: nodes.a.b: invalid node type name"}},
		{"log format", "log:\n  format: xml\n", []string{"bad.yaml:2: log.format:"}},
		{"ack mode", "consumer:\n  ack: maybe\n", []string{"bad.yaml:2: consumer.ack:"}},
		{"breaker scope", "breaker:\n  scope: galaxy\n", []string{"bad.yaml:2: breaker.scope:"}},
		{"two errors", "consumer:\n  workers: 0\nlog:\n  level: loud\n", []string{"bad.yaml:2: consumer.workers", "bad.yaml:4: log.level"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("bad.yaml", []byte(c.yml))
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	cfg := Default()
	cfg.ApplyEnv(func(k string) string {
		if k == "NATS_URL" {
			return "nats://env:4222"
		}
		return ""
	})
	if cfg.NATS.URL != "nats://env:4222" {
		t.Fatal(cfg.NATS.URL)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"10": 10, "1KiB": 1024, "2 MiB": 2 << 20, "1GB": 1e9, "5B": 5} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MiB", "MiB", "99999999999TiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s := ByteSize(3 << 20).String(); s != "3MiB" {
		t.Error(s)
	}
}

func TestResilienceConfig(t *testing.T) {
	yml := `
retry:
  attempts: 5
  jitter: 0.2
redelivery:
  max_deliveries: 4
  backoff: [1s, 10s]
breaker:
  failure_threshold: 3
  cooldown: 10s
nodes:
  echo: {}
  flaky:
    executor: fault
    retry:
      delay: 1s
      max_delay: 4s
  once:
    executor: fault
    retry: {policy: none}
`
	cfg, err := Parse("r.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if rd := cfg.RedeliveryPolicy(); rd.MaxDeliveries != 4 || len(rd.Backoff) != 2 || rd.Backoff[1] != 10*time.Second {
		t.Fatalf("redelivery %+v", rd)
	}
	bs, on := cfg.BreakerSettings()
	if !on || bs.Cooldown != 10*time.Second || bs.MaxCooldown != 30*time.Second || !bs.ReadyToTrip(resilience.Counts{ConsecutiveFailures: 3}) {
		t.Fatalf("breaker %+v", bs)
	}
	r, _ := cfg.Registry()
	flaky, _ := r.Lookup("flaky")
	p, ok := flaky.Retry.(*resilience.Exponential)
	if !ok || p.Base != time.Second || p.Max != 4*time.Second || p.Attempts != 5 || p.Multiplier != 2 || p.Jitter != 0.2 {
		t.Fatalf("node retry must inherit unset keys: %+v", flaky.Retry)
	}
	once, _ := r.Lookup("once")
	if _, more := once.Retry.NextRetry(1); more {
		t.Fatal("policy none retried")
	}
	echo, _ := r.Lookup("echo")
	if echo.Retry != nil {
		t.Fatal("a node without a retry block must use the consumer default")
	}

	for yml, want := range map[string]string{
		"retry:\n  policy: sometimes\n":                                       "r.yaml:2: retry.policy:",
		"retry:\n  max_delay: 10ms\n":                                         "r.yaml:2: retry.max_delay: 10ms is less than delay 100ms",
		"redelivery:\n  max_deliveries: 0\n":                                  "r.yaml:2: redelivery.max_deliveries:",
		"breaker:\n  cooldown: 1m\n  max_cooldown: 10s\n":                     "r.yaml:3: breaker.max_cooldown:",
		"breaker:\n  failure_rate: 50\n":                                      "r.yaml:2: breaker.failure_rate: 50: want a share of failures from 0 (off) to 1",
		"breaker:\n  failure_rate: 0.5\n  min_requests: 0\n":                  "r.yaml:3: breaker.min_requests: 0: want at least 1",
		"breaker:\n  failure_rate: 0.5\n  window: 0s\n":                       "r.yaml:3: breaker.window: must be a positive duration",
		"nodes:\n  f:\n    executor: fault\n    retry:\n      attempts: -1\n": "r.yaml:5: nodes.f.retry.attempts",
	} {
		cfg, err := Parse("r.yaml", []byte(yml))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", yml, err, want)
		}
	}
	if _, on := (&Config{Breaker: Breaker{FailureThreshold: 0}}).BreakerSettings(); on {
		t.Fatal("threshold 0 must disable the breaker")
	}
}

func TestBreakerFailureRateConfig(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte("breaker:\n  failure_threshold: 0\n  failure_rate: 0.5\n  min_requests: 4\n  window: 30s\n"))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	bs, on := cfg.BreakerSettings()
	if !on || bs.Interval != 30*time.Second {
		t.Fatalf("rate-only breaker: on=%v %+v", on, bs)
	}
	for _, c := range []struct {
		counts resilience.Counts
		want   bool
	}{
		{resilience.Counts{Failures: 3, ConsecutiveFailures: 3}, false}, // below min_requests
		{resilience.Counts{Successes: 2, Failures: 2}, true},            // 0.5 of 4
		{resilience.Counts{Successes: 9, Failures: 4, ConsecutiveFailures: 4}, false},
	} {
		if got := bs.ReadyToTrip(c.counts); got != c.want {
			t.Errorf("%+v: trip %v", c.counts, got)
		}
	}

	// Both conditions: either trips. The default has only the consecutive one.
	cfg, _ = Parse("r.yaml", []byte("breaker:\n  failure_rate: 0.9\n"))
	bs, _ = cfg.BreakerSettings()
	if !bs.ReadyToTrip(resilience.Counts{Successes: 100, Failures: 5, ConsecutiveFailures: 5}) ||
		!bs.ReadyToTrip(resilience.Counts{Successes: 1, Failures: 19, ConsecutiveFailures: 1}) ||
		bs.ReadyToTrip(resilience.Counts{Successes: 3, Failures: 17, ConsecutiveFailures: 4}) {
		t.Fatal("threshold 5 or rate 0.9 of 20")
	}
	if bs, _ := Default().BreakerSettings(); bs.Interval != 0 || bs.ReadyToTrip(resilience.Counts{Failures: 20}) {
		t.Fatalf("the default breaker must count consecutive failures only: %+v", bs)
	}

	// The environment sets it too.
	cfg = Default()
	if err := cfg.ApplyEnv(func(k string) string {
		return map[string]string{"NODEQ_BREAKER_FAILURE_RATE": "0.25", "NODEQ_BREAKER_WINDOW": "2m"}[k]
	}); err != nil || cfg.Breaker.FailureRate != 0.25 || cfg.Breaker.Window != 2*time.Minute {
		t.Fatalf("env: %v %+v", err, cfg.Breaker)
	}
}

// TestReadmeExampleParses keeps the README's configuration example true.
func TestReadmeExampleParses(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\n")
	if !ok {
		t.Fatal("README has no yaml example")
	}
	example, _, _ := strings.Cut(rest, "```")
	cfg, err := Parse("README.md", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nodes["notify"].Retry == nil || cfg.Redelivery.MaxDeliveries != 3 {
		t.Fatalf("example not read: %+v", cfg)
	}
}

func TestEnvAndRedacted(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte("nats:\n  url: nats://a:4222\n  password: filepw\nconsumer:\n  workers: 2\nnodes:\n  hook:\n    executor: http\n    url: http://x/y\n    timeout: 1s\n    headers: {Authorization: Bearer abc}\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NODEQ_CONSUMER_WORKERS": "9", "NODEQ_CONSUMER_ACK_WAIT": "1m", "NODEQ_STREAMS_DLQ_MAX_BYTES": "2GiB",
		"NODEQ_NATS_USER": "svc", "NODEQ_NATS_TLS_CA_FILE": "/ca.pem", "NODEQ_EMBEDDED_SYNC_ALWAYS": "true"}
	if err := cfg.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.Consumer.Workers != 9 || cfg.Consumer.AckWait != time.Minute || cfg.Streams.DLQMaxBytes != 2<<30 ||
		cfg.NATS.User != "svc" || cfg.NATS.Password != "filepw" || cfg.NATS.TLS.CAFile != "/ca.pem" || !cfg.Embedded.SyncAlways {
		t.Fatalf("environment not applied over the file: %+v", cfg)
	}
	out := cfg.Redacted()
	for _, secret := range []string{"filepw", "Bearer abc"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret %q printed:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "dlq_max_bytes: 2GiB") || !strings.Contains(out, "workers: 9") {
		t.Fatalf("effective values missing:\n%s", out)
	}
	if err := cfg.ApplyEnv(func(k string) string {
		if k == "NODEQ_CONSUMER_PULL_WAIT" {
			return "soon"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "NODEQ_CONSUMER_PULL_WAIT (consumer.pull_wait)") {
		t.Fatalf("bad env value: %v", err)
	}
}

// TestRedactedMasksURLCredentials: --check-config must not print the
// password or token inside nats.url, nor the credentials or query values of
// an http node's url.
func TestRedactedMasksURLCredentials(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`nats:
  url: "nats://svc:hunter2@nats-1:4222, nats://tok-abc123@nats-2:4222,svc:pw-noscheme@nats-3:4222"
nodes:
  notify:
    executor: http
    url: "https://bob:pw-http@hooks.internal/notify?api_key=KEY123&sig=SIG456#frag-secret"
    timeout: 1s
  plain:
    executor: http
    url: http://hooks.internal:8080/plain
    timeout: 1s
`))
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Redacted()
	for _, secret := range []string{"hunter2", "tok-abc123", "pw-noscheme", "pw-http", "KEY123", "SIG456", "frag-secret"} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret %q printed:\n%s", secret, out)
		}
	}
	for _, want := range []string{"nats://svc:*****@nats-1:4222", "nats://*****@nats-2:4222", "svc:*****@nats-3:4222",
		"https://bob:*****@hooks.internal/notify?api_key=*****&sig=*****#*****", "url: http://hooks.internal:8080/plain"} {
		if !strings.Contains(out, want) {
			t.Fatalf("%q missing:\n%s", want, out)
		}
	}
	if cfg.NATS.URL != "nats://svc:hunter2@nats-1:4222, nats://tok-abc123@nats-2:4222,svc:pw-noscheme@nats-3:4222" ||
		!strings.Contains(cfg.Nodes["notify"].URL, "pw-http") {
		t.Fatal("Redacted changed the configuration itself")
	}

	for in, want := range map[string]string{
		"":                                 "",
		"nats://127.0.0.1:4222":            "nats://127.0.0.1:4222",
		"nats://[::1]:4222":                "nats://[::1]:4222",
		"tls://u:p@h:4222/":                "tls://u:*****@h:4222/",
		"nats://u:a/b@host:4222":           "nats://u:*****@host:4222", // unescaped '/' in the password
		"nats://u:p@ss@host:4222":          "nats://u:*****@host:4222", // unescaped '@' in the password
		"http://h/x?token":                 "http://h/x?*****",
		"http://h/x?a=1;b=2":               "http://h/x?a=*****&b=*****",
		"http://h/x?":                      "http://h/x?",
		"https://h/x#":                     "https://h/x#",
		"http://u:p%zz@h/x?q=%zz":          "http://u:*****@h/x?q=*****", // not parseable by net/url
		"nats://svc:pw@a:1,nats://tok@b:2": "nats://svc:*****@a:1,nats://*****@b:2",
	} {
		if got := maskURLs(in); got != want {
			t.Errorf("maskURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
