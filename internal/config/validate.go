package config

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/task"
)

// Executor names.
const (
	ExecEcho    = "echo"
	ExecSleep   = "sleep"
	ExecFault   = "fault"
	ExecProcess = "process"
	ExecHTTP    = "http"
)

var builtins = map[string]bool{ExecEcho: true, ExecSleep: true, ExecFault: true}

// Validate checks every field and returns all problems found, each naming
// its file, line and field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) { errs = append(errs, c.fieldErr(path, format, args...)) }

	if c.NATS.URL == "" {
		if _, _, err := net.SplitHostPort(c.Embedded.Listen); err != nil {
			bad("embedded.listen", "%q is not host:port", c.Embedded.Listen)
		}
		if c.Embedded.StoreDir == "" {
			bad("embedded.store_dir", "required when nats.url is empty (the embedded server stores tasks there)")
		}
	}
	if c.Metrics.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Addr); err != nil {
			bad("metrics.addr", "%q is not host:port", c.Metrics.Addr)
		}
	}
	if err := c.QueueNames().Validate(); err != nil {
		bad("names", "%v", err)
	}
	if c.Streams.Replicas < 1 || c.Streams.Replicas > 5 {
		bad("streams.replicas", "%d is outside 1..5", c.Streams.Replicas)
	}
	positiveDur := func(path string, d time.Duration) {
		if d <= 0 {
			bad(path, "must be a positive duration like \"30s\"")
		}
	}
	positiveDur("streams.dlq_max_age", c.Streams.DLQMaxAge)
	if c.Streams.DLQMaxBytes <= 0 {
		bad("streams.dlq_max_bytes", "must be positive")
	}
	if c.Streams.MaxMsgSize < 0 || c.Streams.MaxMsgSize > 64<<20 {
		bad("streams.max_msg_size", "%v is outside 0 (automatic) ..64MiB", c.Streams.MaxMsgSize)
	}
	if c.Consumer.Workers < 1 || c.Consumer.Workers > 10000 {
		bad("consumer.workers", "%d is outside 1..10000", c.Consumer.Workers)
	}
	if c.Consumer.AckWait < time.Second {
		bad("consumer.ack_wait", "%v is under 1s", c.Consumer.AckWait)
	}
	if c.Consumer.MaxAckPending < c.Consumer.Workers+c.Consumer.Prefetch {
		bad("consumer.max_ack_pending", "%d is less than consumer.workers + consumer.prefetch (%d): workers would sit idle", c.Consumer.MaxAckPending, c.Consumer.Workers+c.Consumer.Prefetch)
	}
	if c.Consumer.PullWait < 100*time.Millisecond || c.Consumer.PullWait > time.Minute {
		bad("consumer.pull_wait", "%v is outside 100ms..1m", c.Consumer.PullWait)
	}
	positiveDur("consumer.shutdown_timeout", c.Consumer.ShutdownTimeout)
	positiveDur("consumer.startup_timeout", c.Consumer.StartupTimeout)
	switch c.Consumer.Ack {
	case AckConfirmed, AckSync, AckAsync:
	default:
		bad("consumer.ack", "%q: want confirmed, sync or async", c.Consumer.Ack)
	}
	if c.Consumer.Prefetch < 0 || c.Consumer.Prefetch > 1024 {
		bad("consumer.prefetch", "%d: want 0 to 1024", c.Consumer.Prefetch)
	}
	if c.Consumer.MaxPayload < 0 {
		bad("consumer.max_payload", "must not be negative (0 means streams.max_msg_size)")
	}
	if c.Consumer.PoisonAfter < 1 || c.Consumer.PoisonAfter > 1000 {
		bad("consumer.poison_after", "%d is outside 1..1000", c.Consumer.PoisonAfter)
	}
	if c.Consumer.MaxInflightBytes < 1<<20 {
		bad("consumer.max_inflight_bytes", "%v is under 1MiB", c.Consumer.MaxInflightBytes)
	}
	if len(c.Consumer.ReplySubjects) == 0 {
		bad("consumer.reply_subjects", "list at least one subject filter, e.g. [\"_INBOX.>\"]")
	}
	for _, f := range c.Consumer.ReplySubjects {
		if err := queue.CheckReplyFilter(f); err != nil {
			bad("consumer.reply_subjects", "%v", err)
		}
	}
	for _, h := range c.DLQ.MaskHeaders {
		if h == "" || strings.ContainsAny(h, ": \t\r\n") {
			bad("dlq.mask_headers", "%q is not a header name", h)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if len(c.Nodes) == 0 {
		bad("nodes", "no node types: list at least one (or remove the section for echo, sleep and fault)")
	}
	for _, name := range sortedKeys(c.Nodes) {
		errs = append(errs, c.validateNode(name, c.Nodes[name])...)
	}
	errs = append(errs, c.validateResilience()...)
	return errors.Join(errs...)
}

func (c *Config) validateNode(name string, n Node) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		keys := []string{"nodes", name}
		if field != "" {
			keys = append(keys, field)
		}
		errs = append(errs, c.fieldErrAt(keys, format, args...))
	}
	if !task.ValidNodeType(name) {
		bad("", "invalid node type name: use 1-64 of [A-Za-z0-9_-]")
	}
	ex := n.executor(name)
	if n.Timeout < 0 {
		bad("timeout", "must not be negative")
	}
	if n.Concurrency < 0 {
		bad("concurrency", "must not be negative")
	}
	unused := func(field string, set bool) {
		if set {
			bad(field, "only applies to executor %s, not %s", map[string]string{
				"command": ExecProcess, "dir": ExecProcess, "env": ExecProcess, "pass_env": ExecProcess, "max_output": ExecProcess,
				"url": ExecHTTP, "headers": ExecHTTP, "max_response": ExecHTTP, "max_duration": ExecSleep,
			}[field], ex)
		}
	}
	processFields := func() {
		unused("command", len(n.Command) > 0)
		unused("dir", n.Dir != "")
		unused("env", len(n.Env) > 0)
		unused("pass_env", len(n.PassEnv) > 0)
		unused("max_output", n.MaxOutput != 0)
	}
	httpFields := func() {
		unused("url", n.URL != "")
		unused("headers", len(n.Headers) > 0)
		unused("max_response", n.MaxResponse != 0)
	}
	switch ex {
	case ExecEcho, ExecFault:
		processFields()
		httpFields()
		unused("max_duration", n.MaxDuration != 0)
	case ExecSleep:
		processFields()
		httpFields()
	case ExecProcess:
		httpFields()
		unused("max_duration", n.MaxDuration != 0)
		if len(n.Command) == 0 {
			bad("command", "required for executor process, e.g. [\"/usr/local/bin/resize\", \"--fast\"]")
		} else if _, err := executor.Process(executor.ProcessConfig{Command: n.Command, Env: n.Env, PassEnv: n.PassEnv}); err != nil {
			bad("command", "%v", strings.TrimPrefix(err.Error(), "process node: "))
		}
	case ExecHTTP:
		processFields()
		unused("max_duration", n.MaxDuration != 0)
		if n.URL == "" {
			bad("url", "required for executor http")
		} else if _, err := executor.HTTP(executor.HTTPConfig{URL: n.URL}); err != nil {
			bad("url", "%v", strings.TrimPrefix(err.Error(), "http node: "))
		}
	case "":
		bad("executor", "required: %q is not a built-in node type, so say which executor runs it (process or http)", name)
	default:
		bad("executor", "unknown executor %q: want echo, sleep, fault, process or http", n.Executor)
	}
	if (ex == ExecProcess || ex == ExecHTTP) && n.Timeout == 0 {
		bad("timeout", "required for executor %s, e.g. \"30s\"", ex)
	}
	return errs
}

// executor returns the node's executor name, defaulting to the node type
// when that is a built-in.
func (n Node) executor(name string) string {
	if n.Executor != "" {
		return n.Executor
	}
	if builtins[name] {
		return name
	}
	return ""
}

// Registry builds the executor registry from a validated configuration.
func (c *Config) Registry() (*executor.Registry, error) {
	r := executor.NewRegistry()
	for _, name := range sortedKeys(c.Nodes) {
		n := c.Nodes[name]
		var ex executor.Executor
		var err error
		switch n.executor(name) {
		case ExecEcho:
			ex = executor.Echo()
		case ExecSleep:
			maxD := n.MaxDuration
			if maxD == 0 {
				maxD = time.Hour
			}
			ex = executor.Sleep(maxD)
		case ExecFault:
			ex = executor.Fault()
		case ExecProcess:
			ex, err = executor.Process(executor.ProcessConfig{Command: n.Command, Dir: n.Dir, Env: n.Env, PassEnv: n.PassEnv, MaxOutput: int(n.MaxOutput)})
		case ExecHTTP:
			ex, err = executor.HTTP(executor.HTTPConfig{URL: n.URL, Headers: n.Headers, MaxResponse: int64(n.MaxResponse)})
		default:
			err = fmt.Errorf("unknown executor %q", n.executor(name))
		}
		if err == nil {
			err = r.Register(executor.Node{Type: name, Executor: ex, Timeout: n.Timeout, Concurrency: n.Concurrency, Retry: c.nodeRetry(n)})
		}
		if err != nil {
			return nil, c.fieldErrAt([]string{"nodes", name}, "%v", err)
		}
	}
	return r, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
