package queue

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors a leader election causes are waited out until the context ends;
// those that also have lasting causes (no responders: JetStream may be
// off; a 503 other than "temporarily unavailable") only for briefRetry.
func TestRetryCreateGivesUpOnLastingErrors(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		brief   bool
		waitsAt time.Duration // the set-up context's timeout
	}{
		{"no responders", nats.ErrNoResponders, true, time.Minute},
		{"insufficient resources", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, true, time.Minute},
		{"temporarily unavailable", &jetstream.APIError{Code: 503, ErrorCode: jsClusterNotAvailable, Description: "JetStream system temporarily unavailable"}, false, time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), c.waitsAt)
				defer cancel()
				start := time.Now()
				err := retryCreate(ctx, nil, "task stream X", func(context.Context) error { return c.err })
				took := time.Since(start)
				if err == nil {
					t.Fatal("no error")
				}
				if c.brief {
					if took < briefRetry || took > briefRetry+2*time.Second || !strings.Contains(err.Error(), "is JetStream enabled") {
						t.Fatalf("gave up after %v with %v; want about %v and the hint", took, err, briefRetry)
					}
					return
				}
				if took < c.waitsAt || strings.Contains(err.Error(), "is JetStream enabled") {
					t.Fatalf("gave up after %v with %v; want the whole %v", took, err, c.waitsAt)
				}
			})
		})
	}
}
