// Package config reads the consumer's YAML configuration, applies defaults,
// environment and flags, and validates it with errors that name the file,
// line and field. Every key is listed in docs/configuration.md.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
)

// Config is the consumer's whole configuration.
type Config struct {
	NATS       NATS            `yaml:"nats"`
	Embedded   Embedded        `yaml:"embedded"`
	Names      Names           `yaml:"names"`
	Streams    Streams         `yaml:"streams"`
	Consumer   Consumer        `yaml:"consumer"`
	Log        Log             `yaml:"log"`
	Metrics    Metrics         `yaml:"metrics"`
	Tracing    Tracing         `yaml:"tracing"`
	Retry      Retry           `yaml:"retry"`
	Redelivery Redelivery      `yaml:"redelivery"`
	Breaker    Breaker         `yaml:"breaker"`
	DLQ        DLQ             `yaml:"dlq"`
	Nodes      map[string]Node `yaml:"nodes"`

	// file and root locate fields for error messages; empty without a file.
	file string
	root *yaml.Node
}

// NATS says where the server is and how to authenticate. An empty URL
// means: start an embedded server.
type NATS struct {
	URL          string `yaml:"url" secret:"url"`
	User         string `yaml:"user"`
	Password     string `yaml:"password" secret:"true"`
	Token        string `yaml:"token" secret:"true"`
	NKeySeedFile string `yaml:"nkey_seed_file"`
	CredsFile    string `yaml:"creds_file"`
	TLS          TLS    `yaml:"tls"`
}

// TLS configures TLS to the NATS server.
type TLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// Embedded configures the in-process nats-server used when NATS.URL is empty.
type Embedded struct {
	Listen     string `yaml:"listen"`
	StoreDir   string `yaml:"store_dir"`
	SyncAlways bool   `yaml:"sync_always"`
}

// Names are the JetStream stream, subject and consumer names.
type Names struct {
	TaskStream string `yaml:"task_stream"`
	TaskPrefix string `yaml:"task_prefix"`
	DLQStream  string `yaml:"dlq_stream"`
	DLQPrefix  string `yaml:"dlq_prefix"`
	Consumer   string `yaml:"consumer"`
}

// Streams tunes the streams.
type Streams struct {
	Replicas    int           `yaml:"replicas"`
	DLQMaxAge   time.Duration `yaml:"dlq_max_age"`
	DLQMaxBytes ByteSize      `yaml:"dlq_max_bytes"`
	// MaxMsgSize caps a task message (headers and body). 0 means the
	// largest size whose dead-letter record fits the server's max_payload
	// (992 KiB for the default 1 MiB); a larger value is refused at start.
	MaxMsgSize ByteSize `yaml:"max_msg_size"`
}

// DLQ configures what dead-letter records keep.
type DLQ struct {
	// MaskHeaders are task headers whose values records replace with
	// "[masked]" (case-insensitive names). Replay leaves them out.
	MaskHeaders []string `yaml:"mask_headers"`
}

// Consumer tunes the worker process.
type Consumer struct {
	Workers         int           `yaml:"workers"`
	AckWait         time.Duration `yaml:"ack_wait"`
	MaxAckPending   int           `yaml:"max_ack_pending"`
	PullWait        time.Duration `yaml:"pull_wait"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// StartupTimeout bounds the set-up at start (streams, the durable
	// consumer, buckets), including waiting for a JetStream cluster to
	// elect its leaders.
	StartupTimeout time.Duration `yaml:"startup_timeout"`
	// MaxPayload caps a task's body before it is decoded; 0 means
	// streams.max_msg_size.
	MaxPayload ByteSize `yaml:"max_payload"`
	// Ack is how tasks are acked: AckConfirmed (the default), AckSync or AckAsync.
	Ack string `yaml:"ack"`
	// Prefetch is how many delivered tasks may wait for a worker, kept
	// alive, so that a worker that frees up finds its next task there.
	Prefetch int `yaml:"prefetch"`
	// ReplySubjects are the subject filters a task's reply_to must match
	// (default _INBOX.>). $-subjects and nodeq's task and dead-letter
	// subjects are refused whatever this says.
	ReplySubjects []string `yaml:"reply_subjects"`
	// PoisonAfter is how many runs of a task alone in its process may end
	// without an outcome (the process died, hung or lost its connection)
	// before its next delivery dead-letters it unrun, with reason poison.
	PoisonAfter int `yaml:"poison_after"`
	// MaxInflightBytes bounds the task bytes a process holds or has asked
	// the server for; at least streams.max_msg_size.
	MaxInflightBytes ByteSize `yaml:"max_inflight_bytes"`
}

// Values of consumer.ack.
const (
	// AckConfirmed: a worker sends its ack and goes on; the server's
	// confirmation is collected off its path, and an ack not confirmed in
	// time is sent again, logged and counted.
	AckConfirmed = "confirmed"
	// AckSync: a worker waits for each ack's confirmation.
	AckSync = "sync"
	// AckAsync: acks are not confirmed; a lost one means the task runs again.
	AckAsync = "async"
)

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Addr is host:port serving /metrics; empty means off.
	Addr string `yaml:"addr"`
}

// Tracing configures OpenTelemetry tracing (docs/operations.md#tracing).
type Tracing struct {
	// OTLPEndpoint is the OTLP/HTTP collector URL spans are exported to,
	// e.g. http://localhost:4318; empty means off (nothing is recorded).
	OTLPEndpoint string `yaml:"otlp_endpoint" secret:"url"`
	// SampleRatio is the share of traces starting in the consumer that
	// are sampled; a task with a producer's trace context follows it.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the spans' service.name.
	ServiceName string `yaml:"service_name"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// TaskSuccess logs a line per succeeded task at info; off, the line
	// is at debug.
	TaskSuccess bool `yaml:"task_success"`
}

// Retry is an in-process retry policy. In a node's retry block, keys left
// out (or zero) take the global retry's values.
type Retry struct {
	Policy     string        `yaml:"policy"` // RetryNone, RetryFixed or RetryExponential
	Attempts   int           `yaml:"attempts"`
	Delay      time.Duration `yaml:"delay"`
	Multiplier float64       `yaml:"multiplier"`
	MaxDelay   time.Duration `yaml:"max_delay"`
	Jitter     float64       `yaml:"jitter"`
}

// Redelivery says how often and how late a task whose attempts were spent
// is delivered again before it is dead-lettered.
type Redelivery struct {
	MaxDeliveries int             `yaml:"max_deliveries"`
	Backoff       []time.Duration `yaml:"backoff"`
}

// Breaker configures the circuit breaker of the subscription.
type Breaker struct {
	// FailureThreshold is how many consecutive exhausted transient failures
	// open it; 0 turns this condition off.
	FailureThreshold int `yaml:"failure_threshold"`
	// FailureRate, above 0, also opens it when, within one Window, at least
	// MinRequests outcomes were counted and this share of them failed.
	// The breaker is disabled when FailureThreshold and FailureRate are 0.
	FailureRate float64       `yaml:"failure_rate"`
	MinRequests int           `yaml:"min_requests"`
	Window      time.Duration `yaml:"window"`
	Cooldown    time.Duration `yaml:"cooldown"`
	MaxCooldown time.Duration `yaml:"max_cooldown"`
	// Scope is ScopeProcess or ScopeFleet.
	Scope string `yaml:"scope"`
}

// Node configures one node type. Executor defaults to the node type's name
// when that is a built-in (echo, sleep, fault). Executor, Timeout,
// Concurrency and Retry apply to every executor; each other field belongs
// to the executors that list it in executorKinds.
type Node struct {
	Executor    string        `yaml:"executor"`
	Timeout     time.Duration `yaml:"timeout"`
	Concurrency int           `yaml:"concurrency"`
	Retry       *Retry        `yaml:"retry"`
	// sleep
	MaxDuration time.Duration `yaml:"max_duration"`
	// process
	Command   []string          `yaml:"command"`
	Dir       string            `yaml:"dir"`
	Env       map[string]string `yaml:"env" secret:"true"`
	PassEnv   []string          `yaml:"pass_env"`
	MaxOutput ByteSize          `yaml:"max_output"`
	// http
	URL         string            `yaml:"url" secret:"url"`
	Headers     map[string]string `yaml:"headers" secret:"true"`
	MaxResponse ByteSize          `yaml:"max_response"`
	// wasm (also env and max_output)
	Module           string   `yaml:"module"`
	MemoryLimit      ByteSize `yaml:"memory_limit"`
	Mounts           []string `yaml:"mounts"`
	CompilationCache string   `yaml:"compilation_cache"`
	// worker (also command, dir, env, pass_env and max_output)
	PoolSize           int           `yaml:"pool_size"`
	MaxTasksPerProcess int           `yaml:"max_tasks_per_process"`
	StartupTimeout     time.Duration `yaml:"startup_timeout"`
}

// Load reads path over the defaults. An empty path returns the defaults.
// It does not validate; call Validate after applying environment and flags.
func Load(path string) (*Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads YAML data over the defaults; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	cfg := Default()
	cfg.file = name
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(root.Content) == 0 { // empty file
		return cfg, nil
	}
	cfg.root = root.Content[0]
	if hasKey(cfg.root, "nodes") {
		cfg.Nodes = nil // a nodes section replaces the defaults
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			lines := make([]string, len(te.Errors))
			for i, e := range te.Errors {
				lines[i] = cfg.typeError(e).Error()
			}
			return nil, errors.New(strings.Join(lines, "\n"))
		}
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return cfg, nil
}

// Auth returns the NATS authentication and TLS settings.
func (c *Config) Auth() natsconn.Auth {
	n := c.NATS
	return natsconn.Auth{User: n.User, Password: n.Password, Token: n.Token, NKeySeedFile: n.NKeySeedFile, CredsFile: n.CredsFile,
		CAFile: n.TLS.CAFile, CertFile: n.TLS.CertFile, KeyFile: n.TLS.KeyFile, ServerName: n.TLS.ServerName}
}

// QueueNames converts the names section, with defaults for empty names
// (Validate reports names that are not usable).
func (c *Config) QueueNames() queue.Names {
	n, _ := queue.Names{TaskStream: c.Names.TaskStream, TaskPrefix: c.Names.TaskPrefix, DLQStream: c.Names.DLQStream,
		DLQPrefix: c.Names.DLQPrefix, Consumer: c.Names.Consumer}.Resolve()
	return n
}

// FieldError is a configuration error located at a field.
type FieldError struct {
	File  string // empty when the value did not come from a file
	Line  int    // 0 when unknown
	Field string // dotted path, e.g. nodes.resize.command
	Msg   string
}

// Error implements error: "consumer.yaml:12: nodes.resize.command: required".
func (e *FieldError) Error() string {
	loc := ""
	switch {
	case e.File != "" && e.Line > 0:
		loc = e.File + ":" + strconv.Itoa(e.Line) + ": "
	case e.File != "":
		loc = e.File + ": "
	}
	return loc + e.Field + ": " + e.Msg
}

// fieldErr builds a FieldError for a dotted path, finding its line in the file.
func (c *Config) fieldErr(path string, format string, args ...any) *FieldError {
	return c.fieldErrAt(strings.Split(path, "."), format, args...)
}

// fieldErrAt is fieldErr with the path as keys, for keys that contain dots.
func (c *Config) fieldErrAt(keys []string, format string, args ...any) *FieldError {
	return &FieldError{File: c.file, Line: lineOf(c.root, keys), Field: strings.Join(keys, "."), Msg: fmt.Sprintf(format, args...)}
}

// lineOf finds the line of the deepest key of path present in a mapping tree.
func lineOf(n *yaml.Node, path []string) int {
	line := 0
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func hasKey(n *yaml.Node, key string) bool { return valueOf(n, key) != nil }

// typeError turns a yaml.v3 message ("line 7: cannot unmarshal ...") into a
// FieldError naming the field at that line.
func (c *Config) typeError(msg string) *FieldError {
	fe := &FieldError{File: c.file, Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				fe.Line, fe.Msg = line, text
				fe.Field = pathAt(c.root, line, "")
			}
		}
	}
	if strings.HasPrefix(fe.Msg, "field ") && strings.Contains(fe.Msg, " not found in type ") {
		fe.Msg = "unknown key (see docs/configuration.md for the keys)"
	}
	if fe.Field == "" {
		fe.Field = "(document)"
	}
	return fe
}

// pathAt returns the dotted path of the key on the given line.
func pathAt(n *yaml.Node, line int, prefix string) string {
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := k.Value
		if prefix != "" {
			p = prefix + "." + k.Value
		}
		if k.Line == line {
			return p
		}
		if deeper := pathAt(v, line, p); deeper != "" {
			return deeper
		}
		if v.Line == line {
			return p
		}
		if v.Kind == yaml.SequenceNode {
			for _, item := range v.Content {
				if item.Line == line {
					return p
				}
			}
		}
	}
	return ""
}
