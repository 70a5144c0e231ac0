// Package console is nodeq's operator console: a web page for the fleet
// and the dead-letter queue, served by `producer ui`. It shows the task
// stream, the consumer processes and their breakers, and the failures
// grouped the way ServicePulse groups them, and it acts through the same
// library code as the command line (fleet, dlq): replay with a dry-run
// preview, purge, pause and resume, breaker open and close.
//
// Everything it serves is embedded in the binary. Every action is logged.
// Requests are checked by Handler: a token when one is set, the Host
// header (against DNS rebinding), and for state-changing requests
// cross-origin protection and a JSON body (against cross-site requests).
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/nodeq/nodeq/internal/dlq"
	"github.com/nodeq/nodeq/internal/queue"
)

//go:embed assets
var assets embed.FS

// Options configure a console. JS and Names are required.
type Options struct {
	// JS is the JetStream handle it reads and acts with.
	JS jetstream.JetStream
	// Names are the fleet's streams, prefixes and consumer.
	Names queue.Names
	// Token, if set, must accompany every request: an
	// "Authorization: Bearer" header, or the cookie /login sets.
	Token string
	// Hosts are the host names (without port) requests may name in their
	// Host header, besides loopback names and addresses. Empty with
	// AnyHost false: loopback only, which stops DNS rebinding.
	Hosts []string
	// AnyHost accepts any Host header (with a token set, the token is the
	// guard).
	AnyHost bool
	// SecureCookie marks the login cookie Secure (served over TLS).
	SecureCookie bool
	// Log receives one line per action and per refused request. Default
	// slog.Default().
	Log *slog.Logger
	// By names the operator in breaker commands and the log, e.g. "alice@host".
	By string
	// Refresh is how often the overview is pushed to an open page. Default 2s.
	Refresh time.Duration
}

// Console serves the console. Its zero value is not usable: see New.
type Console struct {
	o     Options
	store *dlq.Store
	mux   *http.ServeMux
	jobs  *jobs

	overviewMu   sync.Mutex
	overview     *Overview // the latest, shared by every open page
	overviewTime time.Time

	// refusals paces the log lines of refused requests.
	refusals *rate.Limiter

	// ctx ends the replays it runs when Close is called.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a console for the fleet the options name.
func New(o Options) (*Console, error) {
	if o.JS == nil {
		return nil, errors.New("console: no JetStream handle")
	}
	if err := o.Names.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Refresh <= 0 {
		o.Refresh = 2 * time.Second
	}
	if o.By == "" {
		o.By = "console"
	}
	c := &Console{o: o, store: dlq.NewStore(o.JS, o.Names.DLQStream, o.Names.DLQPrefix), jobs: newJobs(), refusals: rate.NewLimiter(5, 20)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.routes()
	return c, nil
}

// Close stops the replays under way (each stops between records; a rerun
// continues) and waits for them.
func (c *Console) Close() {
	c.cancel()
	c.jobs.wait()
}

// routes registers the pages and the API.
func (c *Console) routes() {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /", files)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("GET /api/overview", c.getOverview)
	mux.HandleFunc("GET /api/events", c.events)
	mux.HandleFunc("GET /api/groups", c.getGroups)
	mux.HandleFunc("GET /api/records", c.getRecords)
	mux.HandleFunc("GET /api/records/{seq}", c.getRecord)
	mux.HandleFunc("POST /api/replay", c.postReplay)
	mux.HandleFunc("GET /api/jobs/{id}", c.getJob)
	mux.HandleFunc("POST /api/jobs/{id}/cancel", c.cancelJob)
	mux.HandleFunc("POST /api/purge", c.postPurge)
	mux.HandleFunc("POST /api/pause", c.postPause)
	mux.HandleFunc("POST /api/resume", c.postResume)
	mux.HandleFunc("POST /api/breaker", c.postBreaker)
	c.mux = mux
}

// Handler returns the console's HTTP handler with its checks: security
// headers, the Host header, the token, cross-origin protection and a
// bounded JSON body for state-changing requests.
func (c *Console) Handler() http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.refuse(w, r, http.StatusForbidden, "cross-origin request refused")
	}))
	inner := cop.Handler(c.mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if !c.hostAllowed(r.Host) {
			c.refuse(w, r, http.StatusMisdirectedRequest, "unexpected Host header: open the console by the address it listens on")
			return
		}
		if !c.authorized(r) {
			switch p := r.URL.Path; {
			case r.Method == http.MethodGet && p == "/":
				http.Redirect(w, r, "/login.html", http.StatusSeeOther)
				return
			case r.Method == http.MethodGet && (p == "/login.html" || p == "/app.css"), r.Method == http.MethodPost && p == "/login":
			default:
				c.refuse(w, r, http.StatusUnauthorized, "a token is required: sign in at /login.html, or send Authorization: Bearer TOKEN")
				return
			}
		}
		if r.Method == http.MethodPost && r.URL.Path != "/login" && !isJSON(r.Header.Get("Content-Type")) {
			// A form or a text/plain body can be sent cross-site without a
			// preflight: only JSON is taken.
			c.refuse(w, r, http.StatusUnsupportedMediaType, "state-changing requests take a JSON body (Content-Type: application/json)")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		inner.ServeHTTP(w, r)
	})
}

// maxBody caps a request body.
const maxBody = 64 << 10

// cookieName is the login cookie's name.
const cookieName = "nodeq_console"

// authorized reports whether r carries the token, when one is set.
func (c *Console) authorized(r *http.Request) bool {
	if c.o.Token == "" {
		return true
	}
	given := ""
	if auth := r.Header.Get("Authorization"); len(auth) > 7 && auth[:7] == "Bearer " {
		given = auth[7:]
	} else if ck, err := r.Cookie(cookieName); err == nil {
		given = ck.Value
	}
	return subtle.ConstantTimeCompare([]byte(given), []byte(c.o.Token)) == 1
}

// login checks a token posted from the login page and sets the cookie.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	token := r.PostFormValue("token")
	if c.o.Token == "" || subtle.ConstantTimeCompare([]byte(token), []byte(c.o.Token)) != 1 {
		c.o.Log.Warn("console: sign-in refused", "remote", r.RemoteAddr)
		http.Redirect(w, r, "/login.html?failed=1", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: token, Path: "/", HttpOnly: true, Secure: c.o.SecureCookie, SameSite: http.SameSiteStrictMode})
	c.o.Log.Info("console: signed in", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// refuse answers a refused request and logs it: a few lines a second at
// most, whoever sends them, with the path cut short.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, status int, why string) {
	if c.refusals.Allow() {
		path := r.URL.Path
		if len(path) > 200 {
			path = path[:200] + "..."
		}
		c.o.Log.Warn("console: request refused", "method", r.Method, "path", path, "remote", r.RemoteAddr, "status", status, "why", why)
	}
	writeError(w, status, why)
}
