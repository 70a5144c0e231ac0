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
	goleak.VerifyTestMain(m)
}
