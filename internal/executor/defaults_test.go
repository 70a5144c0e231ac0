package executor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// The exported defaults are the caps a zero MaxOutput and MaxResponse
// apply: the configuration shows them as the values a node runs with.
func TestDefaultCaps(t *testing.T) {
	t.Run("process max_output", func(t *testing.T) {
		for n, wantErr := range map[int]bool{DefaultMaxOutput: false, DefaultMaxOutput + 1: true} {
			out, err := run(t, sh(t, "head -c "+strconv.Itoa(n)+" /dev/zero"), 10*time.Second, "")
			if wantErr != (resilience.KindOf(err) == resilience.Serialization) || (!wantErr && (err != nil || len(out) != n)) {
				t.Errorf("%d bytes of output: %d bytes, %v", n, len(out), err)
			}
		}
	})
	t.Run("http max_response", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write(make([]byte, n))
		}))
		defer srv.Close()
		for n, wantErr := range map[int]bool{DefaultMaxResponse: false, DefaultMaxResponse + 1: true} {
			out, err := httpExec(t, srv.URL+"?n="+strconv.Itoa(n)).Execute(context.Background(), &task.Envelope{ID: "x", NodeType: "h"})
			if wantErr != (resilience.KindOf(err) == resilience.Serialization) || (!wantErr && (err != nil || len(out) != n)) {
				t.Errorf("%d bytes of response: %d bytes, %v", n, len(out), err)
			}
		}
	})
}
