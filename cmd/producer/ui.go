package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/nodeq/nodeq/internal/console"
)

// uiCommand serves the web console.
type uiCommand struct {
	*app
	listen          string
	token           string
	tlsCert, tlsKey string
	hosts           []string
	refresh         time.Duration
	beyondLoopback  bool // by validate
}

func uiCmd(a *app) *cobra.Command {
	c := &uiCommand{app: a}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web console: the fleet, failures grouped, replay, purge, pause, breakers",
		Long: `Serve nodeq's operator console, a web page for the fleet and the dead-letter queue, until
interrupted. It listens on loopback (127.0.0.1:8089) unless --listen says otherwise; beyond
loopback it requires a token (--token or NODEQ_UI_TOKEN), which the browser gives once on a
sign-in page, and it should be given a certificate (--tls-cert, --tls-key). Its actions are
the command line's (dlq replay with its dry run, dlq purge, pause, resume, breaker open and
close), run by this process with its NATS credentials, and each is logged on stderr.`,
		Example: `  producer ui                                     # http://127.0.0.1:8089/
  producer ui --listen 127.0.0.1:9090 --refresh 5s`,
		Args: cobra.NoArgs,
	}
	fl := cmd.Flags()
	fl.StringVar(&c.listen, "listen", "127.0.0.1:8089", "address to listen on (host:port); beyond loopback a token is required")
	fl.StringVar(&c.token, "token", a.getenv("NODEQ_UI_TOKEN"), "token every request must carry (env NODEQ_UI_TOKEN); required beyond loopback")
	fl.StringVar(&c.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	fl.StringVar(&c.tlsKey, "tls-key", "", "and this key (PEM)")
	fl.StringSliceVar(&c.hosts, "host", nil, "host names the console is reached by, besides loopback (repeatable); default: any with a token beyond loopback")
	fl.DurationVar(&c.refresh, "refresh", 2*time.Second, "how often an open page's overview is refreshed")
	return a.bind(cmd, c)
}

// actionLog is the console's log: every action and refused request, on stderr.
func (c *uiCommand) actionLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// minToken is the shortest token accepted.
const minToken = 16

func (c *uiCommand) validate() error {
	host, port, err := net.SplitHostPort(c.listen)
	if err != nil {
		return usagef("--listen %q: want host:port, e.g. 127.0.0.1:8089: %w", c.listen, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usagef("--listen %q: bad port", c.listen)
	}
	c.beyondLoopback = !isLoopbackHost(host)
	switch {
	case c.beyondLoopback && c.token == "":
		return usagef("--listen %s reaches beyond loopback: set a token (--token or NODEQ_UI_TOKEN, at least %d characters), or listen on 127.0.0.1", c.listen, minToken)
	case c.token != "" && len(c.token) < minToken:
		return usagef("the token is %d characters: use at least %d (e.g. openssl rand -hex 16)", len(c.token), minToken)
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return usagef("--tls-cert and --tls-key go together")
	case c.refresh < 200*time.Millisecond || c.refresh > time.Hour:
		return usagef("--refresh %v: want 200ms to 1h", c.refresh)
	}
	for _, h := range c.hosts {
		if h == "" || strings.ContainsAny(h, ":/ ") {
			return usagef("--host %q: want a host name without port", h)
		}
	}
	return nil
}

// isLoopbackHost reports whether a listen host is loopback only ("" and
// 0.0.0.0 are every interface).
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *uiCommand) run(ctx context.Context) error {
	return c.withJS(func(js jetstream.JetStream) error {
		log := c.actionLog()
		con, err := console.New(console.Options{JS: js, Names: c.names, Token: c.token, Hosts: c.hosts,
			AnyHost: c.beyondLoopback && len(c.hosts) == 0, SecureCookie: c.tlsCert != "", Log: log,
			By: defaultBy(c.getenv) + " (console)", Refresh: c.refresh})
		if err != nil {
			return err
		}
		defer con.Close()
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: con.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		scheme := "http"
		if c.tlsCert != "" {
			scheme = "https"
		}
		url := fmt.Sprintf("%s://%s/", scheme, ln.Addr())
		fmt.Fprintf(c.stdout, "nodeq console on %s (consumer %s on %s); stop with Ctrl-C\n", url, c.names.Consumer, c.names.TaskStream)
		if c.beyondLoopback && c.tlsCert == "" {
			fmt.Fprintln(c.stderr, "warning: serving beyond loopback without TLS: the token crosses the network in the clear (--tls-cert, --tls-key)")
		}
		errc := make(chan error, 1)
		go func() {
			if c.tlsCert != "" {
				errc <- srv.ServeTLS(ln, c.tlsCert, c.tlsKey)
			} else {
				errc <- srv.Serve(ln)
			}
		}()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		con.Close() // ends the pages' event streams and the replays under way
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		fmt.Fprintln(c.stdout, "console stopped")
		return nil
	})
}
