package metrics

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
)

// Probes serve a consumer's HTTP endpoints: /metrics, /healthz (the process
// is alive) and /readyz (connected to NATS, set up, not shutting down).
// Every method is safe on a nil *Probes.
type Probes struct {
	// Metrics are the nodeq series, in a registry of their own besides
	// the Go and process collectors.
	Metrics *Metrics
	mu      sync.Mutex
	ready   func() bool // nil: not ready
	addr    string
	stop    func()
}

// ServeProbes listens on addr (host:port) and serves the probes until
// Stop. With addr empty it returns nil: no listener, no metrics.
func ServeProbes(addr string, log *slog.Logger) (*Probes, error) {
	if addr == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p := &Probes{Metrics: New(reg)}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	p.addr = l.Addr().String()
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
		p.SetReady(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		<-done
	}
	return p, nil
}

// Series returns the metrics, nil when p is nil (recording on nil Metrics
// does nothing).
func (p *Probes) Series() *Metrics {
	if p == nil {
		return nil
	}
	return p.Metrics
}

// Addr is the address the probes listen on.
func (p *Probes) Addr() string {
	if p == nil {
		return ""
	}
	return p.addr
}

// SetReady sets the readiness check; nil means not ready.
func (p *Probes) SetReady(f func() bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.ready = f
	p.mu.Unlock()
}

// Stop closes the listener and waits for it.
func (p *Probes) Stop() {
	if p == nil {
		return
	}
	p.stop()
}

func (p *Probes) readyz(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	f := p.ready
	p.mu.Unlock()
	if f == nil || !f() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
