package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if run leaves a goroutine behind after shutdown.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
