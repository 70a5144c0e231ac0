package config

import (
	"errors"
	"net"
	"sort"
	"strings"

	"github.com/nodeq/nodeq/internal/queue"
)

// Validate checks every field and returns all problems found, each naming
// its file, line and field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) { errs = append(errs, c.fieldErr(path, format, args...)) }

	if c.NATS.URL == "" {
		if _, _, err := net.SplitHostPort(c.Embedded.Listen); err != nil {
			bad("embedded.listen", "%q is not host:port", c.Embedded.Listen)
		}
		if c.Embedded.StoreDir == "" {
			bad("embedded.store_dir", "required when nats.url is empty (the embedded server stores tasks there)")
		}
	}
	if c.Metrics.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Addr); err != nil {
			bad("metrics.addr", "%q is not host:port", c.Metrics.Addr)
		}
	}
	errs = append(errs, c.validateTracing()...)
	if err := c.QueueNames().Validate(); err != nil {
		bad("names", "%v", err)
	}
	errs = append(errs, c.checkBounds()...)
	if c.Consumer.MaxAckPending < c.Consumer.Workers+c.Consumer.Prefetch {
		bad("consumer.max_ack_pending", "%d is less than consumer.workers + consumer.prefetch (%d): workers would sit idle", c.Consumer.MaxAckPending, c.Consumer.Workers+c.Consumer.Prefetch)
	}
	switch c.Consumer.Ack {
	case AckConfirmed, AckSync, AckAsync:
	default:
		bad("consumer.ack", "%q: want confirmed, sync or async", c.Consumer.Ack)
	}
	if len(c.Consumer.ReplySubjects) == 0 {
		bad("consumer.reply_subjects", "list at least one subject filter, e.g. [\"_INBOX.>\"]")
	}
	for _, f := range c.Consumer.ReplySubjects {
		if err := queue.CheckReplyFilter(f); err != nil {
			bad("consumer.reply_subjects", "%v", err)
		}
	}
	for _, h := range c.DLQ.MaskHeaders {
		if h == "" || strings.ContainsAny(h, ": \t\r\n") {
			bad("dlq.mask_headers", "%q is not a header name", h)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if len(c.Nodes) == 0 {
		bad("nodes", "no node types: list at least one (or remove the section for %s)", list(kindNames(func(k executorKind) bool { return k.builtin }), "and"))
	}
	for _, name := range sortedKeys(c.Nodes) {
		errs = append(errs, c.validateNode(name, c.Nodes[name])...)
	}
	errs = append(errs, c.validateResilience()...)
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
