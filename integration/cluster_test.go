package integration

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nodeq/nodeq/internal/natstest"
)

// TestClusterLeaderLoss: a 3-node JetStream cluster with R3 streams; the
// node leading the task stream is shut down mid-run. Every task completes.
func TestClusterLeaderLoss(t *testing.T) {
	servers := natstest.Cluster(t, 3)
	nc, err := nats.Connect(natstest.URLs(servers), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := newJS(t, nc)
	e := setupEnvRetry(t, servers[0], nc, js)
	res := e.collectResults()
	const n = 3000
	ids := e.publishSleeps("c", n, "1ms")
	e.start(sleepRegistry(), runnerOpts{workers: 8, ackWait: 2 * time.Second})
	eventually(t, 60*time.Second, "a third of the tasks", func() bool { d, _, _ := res.count(); return d >= n/3 })

	st, err := e.js.Stream(context.Background(), e.names.TaskStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("task stream is not R3 with a leader: %+v %v", info.Cluster, err)
	}
	leader := info.Cluster.Leader
	for _, s := range servers {
		if s.Name() == leader {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	eventually(t, 120*time.Second, "every task after the leader was lost", func() bool {
		d, _, _ := res.count()
		return d == n
	})
	t.Logf("leader %s shut down", leader)
	lost, _ := res.account(t, e, ids)
	if lost != 0 {
		t.Fatalf("lost %d", lost)
	}
	eventually(t, 60*time.Second, "the task stream to empty", func() bool { return e.streamMsgs(e.names.TaskStream) == 0 })
}
