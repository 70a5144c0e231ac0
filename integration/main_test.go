package integration

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// consumer, server and connection must shut down completely.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
