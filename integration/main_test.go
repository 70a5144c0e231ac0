package integration

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// consumer, server and connection must shut down completely. It also
// removes the consumer binary the process tests built.
func TestMain(m *testing.M) {
	// Two loops of nats-server end on their own a moment after Shutdown
	// (a store's state flush, the shared access-time ticker); a server
	// left running keeps its listeners and clients, which are still caught.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"), goleak.Cleanup(func(code int) {
			if binPath != "" {
				_ = os.RemoveAll(filepath.Dir(binPath))
			}
			os.Exit(code)
		}))
}
