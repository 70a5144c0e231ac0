package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nodeq/nodeq/internal/metrics"
)

// probes serves /metrics, /healthz (the process is alive) and /readyz
// (connected to NATS, streams and consumer bound, not shutting down).
type probes struct {
	metrics *metrics.Metrics // nil when the listener is off
	mu      sync.Mutex
	ready   func() bool // nil: not ready
	stop    func()
}

// setReady sets the readiness check; nil means not ready.
func (p *probes) setReady(f func() bool) {
	p.mu.Lock()
	p.ready = f
	p.mu.Unlock()
}

func (p *probes) readyz(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	f := p.ready
	p.mu.Unlock()
	if f == nil || !f() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// startHTTP starts the listener when addr is set. With addr empty it
// returns probes with nil metrics and nothing listening.
func startHTTP(addr string, log *slog.Logger) (*probes, error) {
	p := &probes{stop: func() {}}
	if addr == "" {
		return p, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.metrics = metrics.New(reg)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", p.readyz)
	// Every wait on a scraper is bounded: a client that stalls or idles
	// does not hold a connection (and its goroutine) forever.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", l.Addr().String(), "paths", "/metrics /healthz /readyz")
	p.stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return p, nil
}
