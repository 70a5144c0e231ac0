package consumer

import (
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/config"
	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/worker"
)

// Dial connects a consumer process to NATS as the configuration says:
// to nats.url, or, when it is empty, to an embedded nats-server it starts
// (requiring the configured credentials; it serves no TLS, so the TLS
// settings are unused). The connection uses the consumers' inbox prefix
// (queue.ConsumerInbox). close closes the connection, then shuts the
// embedded server down and releases its store directory.
func Dial(cfg *config.Config, log *slog.Logger) (nc *nats.Conn, close func(), err error) {
	url, auth := cfg.NATS.URL, cfg.Auth()
	stopServer := func() {}
	if url == "" {
		if auth.CAFile != "" || auth.CertFile != "" || auth.KeyFile != "" || auth.ServerName != "" {
			log.Warn("nats.tls is ignored: the embedded nats-server serves no TLS; set nats.url to use a TLS server")
			auth.CAFile, auth.CertFile, auth.KeyFile, auth.ServerName = "", "", "", ""
		}
		srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: cfg.Embedded.Listen, StoreDir: cfg.Embedded.StoreDir,
			SyncAlways: cfg.Embedded.SyncAlways, Auth: auth})
		if err != nil {
			return nil, nil, err
		}
		stopServer = func() {
			natsconn.ShutdownEmbedded(srv) // and release the store directory's lock
			log.Info("embedded nats-server stopped")
		}
		url = srv.ClientURL()
		log.Info("embedded nats-server listening", "nats_url", url, "store_dir", cfg.Embedded.StoreDir, "sync_always", cfg.Embedded.SyncAlways)
	}
	authOpts, err := auth.Options()
	if err == nil {
		nc, err = natsconn.Connect(url, "nodeq-consumer "+worker.DefaultID(), log, append(authOpts, queue.ConsumerInbox())...)
	}
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); stopServer() }, nil
}
