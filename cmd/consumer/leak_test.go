package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if run leaves a goroutine behind after
// shutdown, except two loops of nats-server that end on their own a moment
// after a server's Shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"))
}
