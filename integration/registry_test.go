package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/fleet"
	"github.com/nodeq/nodeq/internal/queue"
	"github.com/nodeq/nodeq/internal/version"
)

const registryConsumerConfig = `
consumer:
  workers: 2
  prefetch: 0
  ack_wait: 3s
  pull_wait: 250ms
  shutdown_timeout: 10s
  reply_subjects: ["results.>"]
nodes:
  sleep: {max_duration: 10s}
`

// statusJSON runs producer status --json against url.
func statusJSON(t *testing.T, url string) fleet.Status {
	t.Helper()
	out, err := exec.Command(producerBinary(t), "status", "--json", "--nats-url", url).Output()
	var st fleet.Status
	if err != nil || json.Unmarshal(out, &st) != nil {
		t.Fatalf("producer status --json: %v\n%s", err, out)
	}
	return st
}

// byID maps the listed processes by ID.
func byID(st fleet.Status) map[string]fleet.ProcessInfo {
	m := map[string]fleet.ProcessInfo{}
	for _, p := range st.Processes {
		m[p.ID] = p
	}
	return m
}

// TestProcessRegistry: two consumer processes announce themselves;
// producer status lists both with their configuration and the tasks they
// run. One killed with SIGKILL drops out by itself within the registry's
// TTL (here a bucket made with 3s); the other, stopped with SIGTERM, is
// gone at once. Every task published succeeds.
func TestProcessRegistry(t *testing.T) {
	e := newEnv(t, queue.StreamOptions{})
	const ttl = 3 * time.Second
	if _, err := e.js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: fleet.ProcessBucket, History: 1, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	res := e.collectResults()
	url := e.srv.ClientURL()
	bin := consumerBinary(t)
	producerBinary(t) // built before anything waits on it
	pA := startConsumerAt(t, bin, url, registryConsumerConfig, "consumer-a.log")
	pB := startConsumerAt(t, bin, url, registryConsumerConfig, "consumer-b.log")
	pA.waitReady(t, 30*time.Second)
	pB.waitReady(t, 30*time.Second)
	host, _ := os.Hostname()
	idA, idB := host+"/"+strconv.Itoa(pA.cmd.Process.Pid), host+"/"+strconv.Itoa(pB.cmd.Process.Pid)

	// Four tasks of 6s: two workers each and no prefetch, so each process runs two.
	ids := e.publishSleeps("reg", 4, "6s")
	var st fleet.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = statusJSON(t, url)
		if m := byID(st); len(st.Processes) == 2 && m[idA].InFlight == 2 && m[idB].InFlight == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not both processes listed with two tasks each (%s, %s): %+v", idA, idB, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for id, p := range byID(st) {
		pid, _ := strconv.Atoi(id[strings.LastIndex(id, "/")+1:])
		if p.Host != host || p.PID != pid || !strings.HasPrefix(p.Version, version.Base) || strings.Join(p.NodeTypes, ",") != "sleep" ||
			p.Workers != 2 || p.Prefetch != 0 || p.Prefetched != 0 || p.DLQHeld != 0 || p.Stream != e.names.TaskStream ||
			p.Consumer != e.names.Consumer || p.Breaker.Scope != "process" || p.Breaker.State != "closed" || p.Paused || p.Stopping ||
			time.Since(p.LastSeen) > ttl || p.Started.After(p.LastSeen) {
			t.Errorf("%s listed as %+v", id, p)
		}
	}
	if st.ProcessesMalformed != 0 || st.ProcessesLeftOut != 0 || st.ProcessesUnknown != "" {
		t.Errorf("status: malformed %d, left out %d, unknown %q", st.ProcessesMalformed, st.ProcessesLeftOut, st.ProcessesUnknown)
	}
	out, err := exec.Command(producerBinary(t), "status", "--nats-url", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 live") || !strings.Contains(string(out), idA) || !strings.Contains(string(out), idB) {
		t.Fatalf("producer status (%v):\n%s", err, out)
	}
	t.Logf("producer status:\n%s", out)

	// SIGKILL: nothing is removed; the entry expires.
	if err := pA.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-pA.exited
	killed := time.Now()
	eventually(t, 4*ttl, "the killed process to drop out", func() bool {
		m := byID(statusJSON(t, url))
		_, listed := m[idA]
		return !listed && len(m) == 1
	})
	t.Logf("the killed process dropped out of producer status %v after it died (TTL %v)", time.Since(killed).Round(100*time.Millisecond), ttl)

	// Its two tasks come back after ack_wait and run on B.
	eventually(t, 30*time.Second, "every task to succeed", func() bool { d, _, _ := res.count(); return d == len(ids) })

	// SIGTERM: the entry is removed before the process exits.
	pB.stop(t)
	if st := statusJSON(t, url); len(st.Processes) != 0 {
		t.Fatalf("after SIGTERM the process is still listed: %+v", st.Processes)
	}
	if lost, _ := res.account(t, e, ids); lost != 0 {
		t.Fatalf("lost %d", lost)
	}
}
