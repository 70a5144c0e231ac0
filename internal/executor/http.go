package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
	"github.com/nodeq/nodeq/internal/tracing"
)

// HTTPConfig configures an http node. The URL comes from the operator's
// configuration, never from a task.
type HTTPConfig struct {
	// URL receives a POST per task.
	URL string
	// Headers are added to every request. Their values are never logged.
	Headers map[string]string
	// MaxResponse caps the response body in bytes; more is an error. 0 means 16 MiB.
	MaxResponse int64
	// Client is the HTTP client; nil means one that does not follow redirects.
	Client *http.Client
}

// HTTP returns an executor that POSTs the payload to cfg.URL. A 2xx response
// body is the output. When the run's ctx carries a span (tracing is on),
// the request carries its W3C traceparent. Connection errors, timeouts, 429 and 5xx are Transport
// (transient); other statuses are permanent (4xx Manifest, others Other).
func HTTP(cfg HTTPConfig) (Executor, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// The URL may carry credentials: say what is wrong without it.
		return nil, errors.New("http node: url is not a valid URL; want an absolute http:// or https:// URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http node: url (scheme %q) must be an absolute http:// or https:// URL", u.Scheme)
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = defaultMaxOutput
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	h := &httpNode{cfg: cfg, display: redactURL(u)}
	return Func(h.execute), nil
}

type httpNode struct {
	cfg     HTTPConfig
	display string // URL without credentials, for errors
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

func (h *httpNode) execute(ctx context.Context, t *task.Envelope) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(t.Payload))
	if err != nil {
		return nil, resilience.Wrap(resilience.Manifest, fmt.Errorf("http node: %w", err))
	}
	switch t.PayloadEncoding {
	case task.PayloadJSON:
		req.Header.Set("Content-Type", "application/json")
	case task.PayloadMsgpack:
		req.Header.Set("Content-Type", task.ContentTypeMsgpack)
	default:
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("Idempotency-Key", t.ID)
	req.Header.Set("Nodeq-Task-Id", t.ID)
	req.Header.Set("Nodeq-Node-Type", t.NodeType)
	if t.NodeID != "" {
		req.Header.Set("Nodeq-Node-Id", t.NodeID)
	}
	if t.CorrelationID != "" {
		req.Header.Set("Nodeq-Correlation-Id", t.CorrelationID)
	}
	tracing.InjectHTTP(ctx, req.Header) // the attempt's span, when tracing is on
	for k, v := range h.cfg.Headers {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // drop the URL, which may carry credentials
		}
		return nil, resilience.Wrap(resilience.Transport, fmt.Errorf("POST %s: %w", h.display, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, h.cfg.MaxResponse+1))
	if err != nil {
		return nil, resilience.Wrap(resilience.Transport, fmt.Errorf("POST %s: reading response after %v: %w", h.display, time.Since(start).Round(time.Millisecond), err))
	}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		if int64(len(body)) > h.cfg.MaxResponse {
			return nil, resilience.Errorf(resilience.Serialization, "POST %s: response exceeds %d bytes", h.display, h.cfg.MaxResponse)
		}
		return body, nil
	case code == http.StatusTooManyRequests || code >= 500:
		return nil, resilience.Errorf(resilience.Transport, "POST %s: %s%s", h.display, resp.Status, snippet(body))
	case code >= 400:
		return nil, resilience.Errorf(resilience.Manifest, "POST %s: %s%s", h.display, resp.Status, snippet(body))
	default:
		return nil, resilience.Errorf(resilience.Other, "POST %s: unexpected %s", h.display, resp.Status)
	}
}

func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return ": " + s
}
