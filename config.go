package nodeq

import (
	"errors"

	"github.com/nodeq/nodeq/internal/config"
)

// Config is the configuration cmd/consumer reads (every key is in
// docs/configuration.md): where NATS is (NATS.URL; empty starts an
// embedded server on Embedded.Listen storing in Embedded.StoreDir), the
// worker count (Consumer.Workers), retries (Retry, Redelivery), the
// circuit breaker (Breaker), the stream names (Names), the configured node
// types (Nodes) and the rest. Set its fields directly, or load the YAML
// file cmd/consumer reads with LoadConfig.
//
// The Log section is for cmd/consumer only: a program passes its own
// logger with WithLogger.
type Config = config.Config

// NodeConfig configures one node type run by a built-in executor (echo,
// sleep, fault, process, http), as under nodes.<type> in the YAML file.
type NodeConfig = config.Node

// DefaultConfig returns cmd/consumer's defaults (docs/configuration.md:
// 16 workers, retries then redeliveries, a circuit breaker per process, an
// embedded server on 127.0.0.1:4222 storing in ./nodeq-data when NATS.URL
// is empty) without its default node types: the consumer runs the
// handlers registered with Consumer.Handle and the node types added to
// Nodes, e.g.
//
//	cfg.Nodes["echo"] = nodeq.NodeConfig{}
func DefaultConfig() *Config {
	cfg := config.Default()
	cfg.Nodes = map[string]NodeConfig{}
	return cfg
}

// LoadConfig reads the YAML file cmd/consumer reads (--config) over
// cmd/consumer's defaults. As there, a file without a nodes section runs
// the echo, sleep and fault node types (besides the registered handlers).
// An error names the file, line and field. It does not read the
// environment: call cfg.ApplyEnv(os.Getenv) for cmd/consumer's NATS_URL
// and NODEQ_* variables. NewConsumer validates the result.
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return nil, errors.New("nodeq: LoadConfig: empty path (DefaultConfig returns the defaults)")
	}
	return config.Load(path)
}

// ParseConfig is LoadConfig for YAML already in memory; name stands for the
// file in errors.
func ParseConfig(name string, yaml []byte) (*Config, error) {
	return config.Parse(name, yaml)
}

// validate checks cfg as cmd/consumer does, except that it accepts a
// configuration without node types when handlers are to be registered in
// Go (Start refuses a consumer with no node type at all).
func validate(cfg *Config) error {
	err := cfg.Validate()
	if err == nil || len(cfg.Nodes) > 0 {
		return err
	}
	var kept []error
	for _, e := range unjoin(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) && fe.Field == "nodes" {
			continue // "no node types": Go handlers may be the node types
		}
		kept = append(kept, e)
	}
	return errors.Join(kept...)
}

// unjoin lists the errors errors.Join joined, or err itself.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
