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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/version"
	"github.com/nodeq/nodeq/internal/worker"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // could not start or run: NATS unreachable, stream setup failed
	exitConfig = 2 // bad flags or configuration
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
	var f flags
	var auth *config.AuthFlags
	code := exitOK
	cmd := &cobra.Command{
		Use:   "consumer",
		Short: "Run nodeq workers against NATS JetStream (embedded server when no URL is set)",
		Long: `consumer pulls tasks published on tasks.<node_type>, runs their nodes and acks them,
dead-lettering tasks that cannot succeed. With no --nats-url and no NATS_URL it starts
an embedded nats-server with JetStream, listening on 127.0.0.1:4222 and storing in ./nodeq-data.

Precedence: flags > environment (NATS_URL) > config file > defaults.`,
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
				fmt.Fprintf(cmd.OutOrStdout(), "# configuration OK: %d node types (%s); secrets masked\n%s", len(cfg.Nodes), strings.Join(mustTypes(cfg), ", "), cfg.Redacted())
				return nil
			}
			if err := serve(ctx, cfg, newLogger(stderr, cfg.Log)); err != nil {
				code = exitFailed
				return err
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.configFile, "config", "c", "", "YAML configuration file (see docs/configuration.md); env NODEQ_CONFIG")
	fl.StringVar(&f.natsURL, "nats-url", "", "NATS server URL(s), comma-separated; empty starts an embedded server; env NATS_URL")
	fl.StringVar(&f.listen, "listen", "", "embedded server client address host:port, port 0 picks a free one (default 127.0.0.1:4222)")
	fl.StringVar(&f.dataDir, "data-dir", "", "embedded server store directory (default ./nodeq-data)")
	fl.IntVarP(&f.workers, "workers", "w", 0, "tasks run at once in this process (default 4)")
	fl.StringVar(&f.logFormat, "log-format", "", "log format: text or json (default text)")
	fl.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn, error (default info)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on host:port at /metrics (default off)")
	fl.BoolVar(&f.checkOnly, "check-config", false, "validate the configuration, print it with secrets masked, and exit")
	auth = config.BindAuthFlags(fl)
	cmd.SetArgs(args)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(stderr, "consumer:", err)
		if code == exitOK {
			code = exitConfig // cobra's own flag and argument errors
		}
	}
	return code
}

func mustTypes(cfg *config.Config) []string {
	r, err := cfg.Registry()
	if err != nil {
		return nil
	}
	return r.Types()
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
	probe, err := startHTTP(cfg.Metrics.Addr, log)
	if err != nil {
		return err
	}
	defer probe.stop()
	m := probe.metrics
	url := cfg.NATS.URL
	auth := cfg.Auth()
	if url == "" {
		// The embedded server requires the configured credentials, and the
		// consumer presents them; it serves no TLS, so the TLS settings are unused.
		if auth.CAFile != "" || auth.CertFile != "" || auth.KeyFile != "" || auth.ServerName != "" {
			log.Warn("nats.tls is ignored: the embedded nats-server serves no TLS; set nats.url to use a TLS server")
			auth.CAFile, auth.CertFile, auth.KeyFile, auth.ServerName = "", "", "", ""
		}
		srv, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: cfg.Embedded.Listen, StoreDir: cfg.Embedded.StoreDir, SyncAlways: cfg.Embedded.SyncAlways, Auth: auth})
		if err != nil {
			return err
		}
		defer func() {
			queue.ShutdownEmbedded(srv) // and release the store directory's lock
			log.Info("embedded nats-server stopped")
		}()
		url = srv.ClientURL()
		log.Info("embedded nats-server listening", "nats_url", url, "store_dir", cfg.Embedded.StoreDir, "sync_always", cfg.Embedded.SyncAlways)
	}
	var authOpts []nats.Option
	if authOpts, err = auth.Options(); err != nil {
		return err
	}
	nc, err := queue.Connect(url, "nodeq-consumer "+worker.DefaultID(), log, append(authOpts, queue.ConsumerInbox())...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	names := cfg.QueueNames()
	maxTask, err := taskSizeLimit(cfg, nc.MaxPayload())
	if err != nil {
		return err
	}
	maxBody := int64(cfg.Consumer.MaxPayload)
	if maxBody == 0 || maxBody > maxTask {
		maxBody = maxTask
	}
	replies, err := queue.NewReplySubjects(names, cfg.Consumer.ReplySubjects)
	if err != nil {
		return err
	}
	// Set-up waits out concurrent creators and a cluster electing its
	// leaders, up to consumer.startup_timeout in all.
	setupCtx, cancel := context.WithTimeout(ctx, cfg.Consumer.StartupTimeout)
	defer cancel()
	setupErr := func(err error) error {
		if ctx.Err() == nil && errors.Is(setupCtx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("JetStream set-up did not finish within consumer.startup_timeout (%v): %w", cfg.Consumer.StartupTimeout, err)
		}
		return err
	}
	if err := queue.EnsureStreams(setupCtx, js, names, queue.StreamOptions{Replicas: cfg.Streams.Replicas, DLQMaxAge: cfg.Streams.DLQMaxAge,
		DLQMaxBytes: int64(cfg.Streams.DLQMaxBytes), MaxMsgSize: int32(maxTask), Logger: log}); err != nil {
		return setupErr(err)
	}
	if err := checkTaskStream(setupCtx, js, names, maxTask, log); err != nil {
		return setupErr(err)
	}
	cons, err := queue.EnsureConsumer(setupCtx, js, names, queue.ConsumerOptions{AckWait: cfg.Consumer.AckWait, MaxAckPending: cfg.Consumer.MaxAckPending, Logger: log})
	if err != nil {
		return setupErr(err)
	}
	m.DLQDepth(func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, names.DLQStream)
		if err != nil {
			return -1
		}
		info, err := st.Info(ctx)
		if err != nil {
			return -1
		}
		return float64(info.State.Msgs)
	})
	var breaker *resilience.Breaker
	var gate queue.Gate
	if bs, on := cfg.BreakerSettings(); on {
		bs.Name = names.Consumer
		bs.OnStateChange = breakerLogger(log, cfg, m)
		var fleet *queue.FleetBreaker
		if cfg.Breaker.Scope == "fleet" {
			if fleet, err = queue.NewFleetBreaker(setupCtx, js, names, worker.DefaultID(), log); err != nil {
				return setupErr(fmt.Errorf("fleet breaker: %w", err))
			}
			if bs.MaxCooldown > 0 {
				fleet.MaxCooldown = bs.MaxCooldown
			}
			bs.Shared = fleet
		}
		breaker = resilience.NewBreaker(bs)
		gate = breaker
		if fleet != nil {
			watchCtx, stopWatch := context.WithCancel(context.Background())
			defer stopWatch()
			if err := fleet.Watch(watchCtx, breaker); err != nil {
				return fmt.Errorf("fleet breaker: %w", err)
			}
		}
	}
	ledger, err := queue.OpenDeliveryLedger(setupCtx, js, names, log)
	if err != nil {
		return setupErr(err)
	}
	w := worker.New(worker.Options{
		Names: names, Registry: registry, DLQ: dlq.NewWriter(js, names.DLQPrefix), Replier: nc, Replies: replies, MaskHeaders: cfg.DLQ.MaskHeaders,
		MaxPayload: int(maxBody), AckWait: ackWait(cfg.Consumer.AckWait, cons), AckAsync: cfg.Consumer.Ack == "async", Logger: log,
		Retry: cfg.RetryPolicy(), Redelivery: cfg.RedeliveryPolicy(), Breaker: breaker, Metrics: m,
		Ledger: ledger, PoisonAfter: cfg.Consumer.PoisonAfter, MaxHeld: max(cfg.Consumer.Workers/2, 1),
	})
	p := queue.NewPuller(nc, cons, w.Handle, queue.PullOptions{Workers: cfg.Consumer.Workers, PullWait: cfg.Consumer.PullWait,
		ShutdownTimeout: cfg.Consumer.ShutdownTimeout, Gate: gate, Logger: log, OnPull: m.Pull, OnPullFailure: m.PullFailure, HandBack: w.HandBack,
		MaxInflightBytes: int64(cfg.Consumer.MaxInflightBytes), MaxMsgBytes: queue.PullMsgBytes(maxTask), OnInflightBytes: m.InFlightBytes})
	log.Info("consumer ready", "nats_url", queue.RedactURLs(url), "stream", names.TaskStream, "consumer", names.Consumer,
		"subjects", names.TaskPrefix+".>", "workers", cfg.Consumer.Workers, "node_types", strings.Join(registry.Types(), ","), "version", version.String())
	probe.setReady(func() bool { return nc.IsConnected() })
	go func() {
		<-ctx.Done()
		probe.setReady(nil)
		log.Info("shutting down: pulling stopped, waiting for in-flight tasks", "timeout", cfg.Consumer.ShutdownTimeout)
	}()
	finished := p.Run(ctx)
	if !finished {
		log.Warn("some in-flight tasks were interrupted and handed back for redelivery")
	}
	log.Info("consumer stopped", "clean", finished)
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		log.Warn("flush before close", "err", err)
	}
	return nil
}

// ackWait is the shorter of the configured ack_wait and the one the
// consumer has on the server (which this user may not have been allowed to
// change, or another process changed).
func ackWait(configured time.Duration, cons jetstream.Consumer) time.Duration {
	if info := cons.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		return min(configured, info.Config.AckWait)
	}
	return configured
}

// breakerLogger logs breaker state changes: an open breaker pauses pulling.
func breakerLogger(log *slog.Logger, cfg *config.Config, m *metrics.Metrics) func(name string, from, to resilience.State) {
	return func(name string, from, to resilience.State) {
		m.Breaker(name, int(to), to.String())
		m.Paused(name, to == resilience.Open)
		l := log.With("subscription", name, "from", from.String(), "to", to.String())
		switch to {
		case resilience.Open:
			attrs := []any{"failure_threshold", cfg.Breaker.FailureThreshold}
			if b := cfg.Breaker; b.FailureRate > 0 {
				attrs = append(attrs, "failure_rate", b.FailureRate, "min_requests", b.MinRequests, "window", b.Window.String())
			}
			l.Error("circuit breaker opened: pulling paused", attrs...)
		case resilience.HalfOpen:
			l.Warn("circuit breaker half-open: one probe task may run")
		case resilience.Closed:
			l.Info("circuit breaker closed: pulling resumed")
		}
	}
}
