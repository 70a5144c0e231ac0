// Command consumer runs nodeq workers: it pulls tasks from the shared durable
// JetStream consumer, runs their nodes, and acks or dead-letters them. With
// no NATS URL it starts an embedded nats-server with JetStream.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/consumer"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/version"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // could not start or run: NATS unreachable, stream setup failed
	exitConfig = 2 // bad flags or configuration
	// exitInterrupted: stopped on a signal, but the shutdown timeout cut
	// in-flight tasks short (they were handed back and run again elsewhere).
	exitInterrupted = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process the default way
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stderr, os.Getenv))
}

// flags are the command-line overrides; a flag left unset keeps the value
// from the environment, the file or the defaults.
type flags struct {
	configFile  string
	natsURL     string
	listen      string
	dataDir     string
	workers     int
	logFormat   string
	logLevel    string
	metricsAddr string
	checkOnly   bool
}

// run is the whole program; main adds only signals and the exit.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) int {
	return runTo(ctx, args, os.Stdout, stderr, getenv)
}

// runTo is run with its standard output (help, --check-config) given.
func runTo(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var f flags
	var auth *config.AuthFlags
	code := exitOK
	cmd := &cobra.Command{
		Use:   "consumer",
		Short: "Run nodeq workers against NATS JetStream (embedded server when no URL is set)",
		Long: `consumer pulls tasks published on tasks.<node_type>, runs their nodes and acks them,
dead-lettering tasks that cannot succeed. With no --nats-url and no NATS_URL it starts
an embedded nats-server with JetStream, listening on ` + config.DefaultListen + ` and storing in ` + config.DefaultStoreDir + `.

Precedence: flags > environment (NATS_URL) > config file > defaults.

To publish tasks, watch the fleet (status, pause, resume) and inspect or replay
dead letters, use the operator's tool: producer --help (go run ./cmd/producer --help).`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, &f, auth, getenv)
			if err != nil {
				code = exitConfig
				return err
			}
			if f.checkOnly {
				fmt.Fprintf(cmd.OutOrStdout(), "# configuration OK: %d node types (%s); defaults filled in, secrets masked\n%s",
					len(cfg.Nodes), strings.Join(slices.Sorted(maps.Keys(cfg.Nodes)), ", "), cfg.Resolved().Redacted())
				return nil
			}
			if err := serve(ctx, cfg, newLogger(stderr, cfg.Log)); err != nil {
				code = exitFailed
				if errors.Is(err, consumer.ErrInterrupted) {
					code = exitInterrupted
				}
				return err
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.configFile, "config", "c", "", "YAML configuration file (see docs/configuration.md); env NODEQ_CONFIG")
	fl.StringVar(&f.natsURL, "nats-url", "", "NATS server URL(s), comma-separated; empty starts an embedded server; env NATS_URL")
	// The flags' own defaults are zero, so that a flag not given leaves the
	// file's and the environment's value; their help shows the configuration's.
	fl.StringVar(&f.listen, "listen", "", "embedded server client address host:port, port 0 picks a free one (default "+config.DefaultListen+")")
	fl.StringVar(&f.dataDir, "data-dir", "", "embedded server store directory (default "+config.DefaultStoreDir+")")
	fl.IntVarP(&f.workers, "workers", "w", 0, "tasks run at once in this process (default "+strconv.Itoa(config.DefaultWorkers)+")")
	fl.StringVar(&f.logFormat, "log-format", "", "log format: text or json (default "+config.DefaultLogFormat+")")
	fl.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn, error (default "+config.DefaultLogLevel+")")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on host:port at /metrics (default off)")
	fl.BoolVar(&f.checkOnly, "check-config", false, "validate the configuration, print it with defaults filled in and secrets masked, and exit")
	auth = config.BindAuthFlags(fl)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(stderr, "consumer:", err)
		if code == exitOK {
			code = exitConfig // cobra's own flag and argument errors
		}
	}
	return code
}

// loadConfig applies defaults, file, environment and flags in that order, then validates.
func loadConfig(cmd *cobra.Command, f *flags, auth *config.AuthFlags, getenv func(string) string) (*config.Config, error) {
	path := f.configFile
	if path == "" {
		path = getenv("NODEQ_CONFIG")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.ApplyEnv(getenv); err != nil {
		return nil, err
	}
	cfg.SetNATS(auth.Overlay(cfg.Auth()))
	set := cmd.Flags().Changed
	if set("nats-url") {
		cfg.NATS.URL = f.natsURL
	}
	if set("listen") {
		cfg.Embedded.Listen = f.listen
	}
	if set("data-dir") {
		cfg.Embedded.StoreDir = f.dataDir
	}
	if set("workers") {
		cfg.Consumer.Workers = f.workers
	}
	if set("log-format") {
		cfg.Log.Format = f.logFormat
	}
	if set("log-level") {
		cfg.Log.Level = f.logLevel
	}
	if set("metrics-addr") {
		cfg.Metrics.Addr = f.metricsAddr
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the consumer until ctx is done.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	registry, err := cfg.Registry()
	if err != nil {
		return err
	}
	defer func() {
		if err := registry.Close(); err != nil {
			log.Warn("closing the node executors", "err", err)
		}
	}()
	probe, err := metrics.ServeProbes(cfg.Metrics.Addr, log)
	if err != nil {
		return err
	}
	defer probe.Stop()
	nc, closeConn, err := consumer.Dial(cfg, log)
	if err != nil {
		return err
	}
	defer closeConn()
	// Set-up waits out concurrent creators and a cluster electing its
	// leaders, up to consumer.startup_timeout in all.
	setupCtx, cancel := context.WithTimeout(ctx, cfg.Consumer.StartupTimeout)
	defer cancel()
	c, err := consumer.New(setupCtx, consumer.Options{Config: cfg, Conn: nc, Logger: log, Metrics: probe.Series(), Registry: registry})
	if err != nil {
		return err
	}
	probe.SetReady(func() bool { return ctx.Err() == nil && nc.IsConnected() })
	return c.Run(ctx)
}
