package nodeq_test

import (
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test or an example leaves a goroutine
// behind: consumers, servers and clients must stop completely. The
// examples log to slog.Default(), kept at warnings here.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	goleak.VerifyTestMain(m, serverWindDown...)
}

// serverWindDown are two loops of nats-server that end on their own a
// moment after a server's Shutdown has returned (a store's state flush, the
// shared access-time ticker): on a loaded machine they may still be there
// when the check runs. A server left running keeps its listeners and
// clients too, which the check still catches.
var serverWindDown = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
	goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
}
