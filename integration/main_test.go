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
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binPath != "" {
			_ = os.RemoveAll(filepath.Dir(binPath))
		}
		os.Exit(code)
	}))
}
