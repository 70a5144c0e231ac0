package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeq/nodeq/internal/executor"
	"github.com/nodeq/nodeq/internal/metrics"
	"github.com/nodeq/nodeq/internal/natsconn"
	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// TestNodeLoss: a 3-node JetStream cluster with R3 streams and the default
// consumer.ack_wait, two consumer processes (in process, each with its own
// connection, one of them connected to the node that is lost). Mid-run one
// node is shut down: the one leading the durable consumer ("leader"), or
// one leading neither the consumer nor the task stream ("follower").
// Nothing may be lost; duplicates are reported, not asserted. The time from
// the loss to the last task done is logged: it is what docs/scaling.md
// states as the bound, measured, not asserted.
func TestNodeLoss(t *testing.T) {
	for _, victim := range []string{"leader", "follower"} {
		t.Run(victim, func(t *testing.T) { nodeLoss(t, victim) })
	}
}

func nodeLoss(t *testing.T, victim string) {
	servers := natstest.Cluster(t, 3)
	setupNC, err := nats.Connect(natstest.URLs(servers), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer setupNC.Close()
	names := queue.DefaultNames()
	js := newJS(t, setupNC)
	ctx := context.Background()
	var cons jetstream.Consumer
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err = queue.EnsureStreams(ctx, js, names, queue.StreamOptions{Replicas: 3}); err == nil {
			// Default ack_wait: the recovery measured is the one operators get.
			if cons, err = queue.EnsureConsumer(ctx, js, names, queue.ConsumerOptions{}); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster setup: %v", err)
		}
	}

	// Pick the node to lose.
	var streamLeader, consLeader string
	eventually(t, 30*time.Second, "stream and consumer leaders with two replicas each", func() bool {
		st, err := js.Stream(ctx, names.TaskStream)
		if err != nil {
			return false
		}
		si, err := st.Info(ctx)
		if err != nil || si.Cluster == nil || si.Cluster.Leader == "" || len(si.Cluster.Replicas) != 2 {
			return false
		}
		ci, err := cons.Info(ctx)
		if err != nil || ci.Cluster == nil || ci.Cluster.Leader == "" || len(ci.Cluster.Replicas) != 2 {
			return false
		}
		streamLeader, consLeader = si.Cluster.Leader, ci.Cluster.Leader
		return true
	})
	var lost, other *server.Server
	for _, s := range servers {
		switch {
		case lost == nil && victim == "leader" && s.Name() == consLeader,
			lost == nil && victim == "follower" && s.Name() != consLeader && s.Name() != streamLeader:
			lost = s
		case other == nil:
			other = s
		}
	}
	if lost == nil || other == nil {
		t.Fatalf("no %s among %v (stream leader %s, consumer leader %s)", victim, servers, streamLeader, consLeader)
	}

	// The test's own connection (results, stream state) stays off the node
	// that is lost, so that it sees every result.
	nc, err := nats.Connect(other.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e := &env{t: t, srv: other, nc: nc, js: newJS(t, nc), names: names, cons: cons}
	// Runs are counted where they happen: a result is published without a
	// confirmation, and one published into the connection to the node that
	// is lost is lost with it, though its task ran and was acked.
	runs := newCounter()
	reg := executor.NewRegistry()
	_ = reg.Register(executor.Node{Type: "sleep", Executor: runs.wrap(executor.Sleep(time.Minute))})
	done := func() int { return len(runs.snapshot()) }

	// Consumer 0 is connected to the node that is lost, consumer 1 to
	// another; both with the consumer binary's connection options.
	urls := []string{lost.ClientURL(), other.ClientURL()}
	regs := make([]*prometheus.Registry, 2)
	consumers := make([]*env, 2)
	for i := range consumers {
		order := []string{urls[i], urls[1-i]}
		for _, s := range servers {
			if s != lost && s != other {
				order = append(order, s.ClientURL())
			}
		}
		cnc, err := natsconn.Connect(strings.Join(order, ","), fmt.Sprintf("nodeloss-%d", i), testLogger(t), nats.DontRandomize())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cnc.Close)
		cjs := newJS(t, cnc)
		ccons, err := cjs.Consumer(ctx, names.TaskStream, names.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		regs[i] = prometheus.NewRegistry()
		consumers[i] = &env{t: t, srv: other, nc: cnc, js: cjs, names: names, cons: ccons}
	}

	const n = 1500
	ids := e.publishSleeps("nl", n, "2ms")
	for i, c := range consumers {
		c.start(reg, runnerOpts{workers: 8, metrics: metrics.New(regs[i])})
	}
	eventually(t, 60*time.Second, "a third of the tasks", func() bool { return done() >= n/3 })

	killed := time.Now()
	lost.Shutdown()
	lost.WaitForShutdown()
	atLoss := done()
	t.Logf("%s %s shut down with %d of %d tasks done (stream leader %s, consumer leader %s)", victim, lost.Name(), atLoss, n, streamLeader, consLeader)

	eventually(t, 50*time.Second, "every task after the node was lost", func() bool { return done() == n })
	lastResult := time.Since(killed)
	eventually(t, 50*time.Second, "every task acked (the task stream empty)", func() bool { return e.streamMsgs(names.TaskStream) == 0 })
	allAcked := time.Since(killed)
	t.Logf("node loss (%s): kill to last task done %v, kill to every task acked %v (ack_wait %v)",
		victim, lastResult.Round(10*time.Millisecond), allAcked.Round(10*time.Millisecond), queue.DefaultAckWait)

	dead := map[string]bool{}
	for _, d := range e.records() {
		dead[d.rec.TaskID] = true
	}
	succeeded, dups, lostTasks := 0, 0, 0
	counts := runs.snapshot()
	for _, id := range ids {
		switch k := counts[id]; {
		case k > 0:
			succeeded++
			dups += k - 1
		case !dead[id]:
			lostTasks++
		}
	}
	t.Logf("published %d = succeeded %d + dead-lettered %d, lost %d, duplicates %d", len(ids), succeeded, len(dead), lostTasks, dups)
	if lostTasks != 0 || succeeded+len(dead) != len(ids) {
		t.Fatalf("lost %d", lostTasks)
	}
	for i, reg := range regs {
		t.Logf("consumer %d (connected to %s): pull failures %s", i, map[int]string{0: lost.Name(), 1: other.Name()}[i], pullFailures(t, reg))
	}
}

// pullFailures reads nodeq_pull_failures_total by cause, e.g.
// "no_responders=3 timeout=1" ("none" without any).
func pullFailures(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "nodeq_pull_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cause" {
					out = append(out, fmt.Sprintf("%s=%d", l.GetValue(), int(m.GetCounter().GetValue())))
				}
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
