package nodeq

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

// probes serve metrics.addr as cmd/consumer does: /metrics, /healthz (the
// process is alive) and /readyz (connected, set up, not shutting down).
type probes struct {
	metrics *metrics.Metrics
	mu      sync.Mutex
	ready   func() bool // nil: not ready
	stop    func()
}

// setReady sets the readiness check; nil means not ready. A nil *probes
// (no metrics.addr) ignores it.
func (p *probes) setReady(f func() bool) {
	if p == nil {
		return
	}
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

// serveMetrics listens on addr and serves the probes, with the nodeq
// metrics in a registry of their own (besides the Go and process
// collectors), until stop.
func serveMetrics(addr string, log *slog.Logger) (*probes, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p := &probes{metrics: metrics.New(reg)}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nodeq: metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", p.readyz)
	// Every wait on a scraper is bounded: a stalled client holds no
	// connection, and no goroutine, for ever.
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
		p.setReady(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		<-done
	}
	return p, nil
}
