package config

import (
	"slices"
	"time"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/tracing"
)

// The defaults that belong to the configuration. The others are the
// library packages' own, which Default takes as they are: the names,
// stream limits, ack wait and reply subjects of queue, the retry,
// redelivery and cooldowns of resilience, the masked headers of dlq, the
// sampling and service name of tracing, and the executors' limits (see
// executorKinds).
const (
	DefaultListen           = "127.0.0.1:4222" // embedded.listen
	DefaultStoreDir         = "./nodeq-data"   // embedded.store_dir
	DefaultReplicas         = 1                // streams.replicas
	DefaultWorkers          = 16               // consumer.workers
	DefaultPrefetch         = 32               // consumer.prefetch
	DefaultPullWait         = time.Second      // consumer.pull_wait
	DefaultShutdownTimeout  = 30 * time.Second // consumer.shutdown_timeout
	DefaultStartupTimeout   = 2 * time.Minute  // consumer.startup_timeout
	DefaultAck              = AckConfirmed     // consumer.ack
	DefaultMaxInflightBytes = 64 << 20         // consumer.max_inflight_bytes
	DefaultLogLevel         = "info"           // log.level
	DefaultLogFormat        = "text"           // log.format
	DefaultFailureThreshold = 5                // breaker.failure_threshold
	DefaultMinRequests      = 20               // breaker.min_requests
	DefaultWindow           = time.Minute      // breaker.window
	DefaultBreakerScope     = ScopeProcess     // breaker.scope
)

// DefaultPoisonAfter is consumer.poison_after's default. It is
// worker.DefaultPoisonAfter, which config may not import (the dependency
// rule, architecture_test.go); TestDefaultsAreTheLibraries ties the two.
const DefaultPoisonAfter = 3

// Values of retry.policy.
const (
	RetryNone        = "none"
	RetryFixed       = "fixed"
	RetryExponential = "exponential"
)

// Values of breaker.scope.
const (
	// ScopeProcess: each consumer process has its own breaker.
	ScopeProcess = "process"
	// ScopeFleet: one breaker for every process sharing the durable consumer.
	ScopeFleet = "fleet"
)

// Default returns the configuration used when no file is given.
func Default() *Config {
	names := queue.DefaultNames()
	retry := resilience.DefaultPolicy()
	redelivery := resilience.DefaultRedelivery()
	return &Config{
		Embedded: Embedded{Listen: DefaultListen, StoreDir: DefaultStoreDir},
		Names: Names{TaskStream: names.TaskStream, TaskPrefix: names.TaskPrefix, DLQStream: names.DLQStream,
			DLQPrefix: names.DLQPrefix, Consumer: names.Consumer},
		Streams: Streams{Replicas: DefaultReplicas, DLQMaxAge: queue.DefaultDLQMaxAge, DLQMaxBytes: queue.DefaultDLQMaxBytes},
		Consumer: Consumer{
			Workers:          DefaultWorkers,
			AckWait:          queue.DefaultAckWait,
			MaxAckPending:    queue.DefaultMaxAckPending,
			PullWait:         DefaultPullWait,
			ShutdownTimeout:  DefaultShutdownTimeout,
			StartupTimeout:   DefaultStartupTimeout,
			Ack:              DefaultAck,
			Prefetch:         DefaultPrefetch,
			ReplySubjects:    slices.Clone(queue.DefaultReplySubjects),
			PoisonAfter:      DefaultPoisonAfter,
			MaxInflightBytes: DefaultMaxInflightBytes,
		},
		DLQ:     DLQ{MaskHeaders: slices.Clone(dlq.DefaultMaskedHeaders)},
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Tracing: Tracing{SampleRatio: tracing.DefaultSampleRatio, ServiceName: tracing.DefaultServiceName},
		Retry: Retry{Policy: RetryExponential, Attempts: retry.Attempts, Delay: retry.Base, Multiplier: retry.Multiplier,
			MaxDelay: retry.Max, Jitter: retry.Jitter},
		Redelivery: Redelivery{MaxDeliveries: redelivery.MaxDeliveries, Backoff: slices.Clone(redelivery.Backoff)},
		Breaker: Breaker{FailureThreshold: DefaultFailureThreshold, MinRequests: DefaultMinRequests, Window: DefaultWindow,
			Cooldown: resilience.DefaultCooldown, MaxCooldown: resilience.DefaultMaxCooldown, Scope: DefaultBreakerScope},
		Nodes: DefaultNodes(),
	}
}

// DefaultNodes are the node types a consumer runs when the file has no
// nodes section: one per built-in executor, with its defaults.
func DefaultNodes() map[string]Node {
	nodes := map[string]Node{}
	for _, k := range executorKinds {
		if k.builtin {
			nodes[k.name] = k.resolve(Node{})
		}
	}
	return nodes
}
