package queue_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nodeq/nodeq/internal/natstest"
	"github.com/nodeq/nodeq/internal/queue"
)

// logBuffer collects what EnsureStreams and EnsureConsumer log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// TestEnsureStreamsKeepsOperatorHardening: an operator hardened nodeq's
// streams (deny delete and purge, a description, metadata, longer
// retention); a consumer whose configuration asks for more of something
// updates only that and keeps everything else. The server refuses any
// update that would switch deny_delete or deny_purge off, so a replacing
// update fails the consumer's start.
func TestEnsureStreamsKeepsOperatorHardening(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	n := queue.DefaultNames()
	if err := queue.EnsureStreams(ctx, js, n, queue.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, js, n, queue.ConsumerOptions{AckWait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}

	// The operator hardens both streams and annotates the consumer.
	tc := streamConfig(t, js, n.TaskStream)
	tc.DenyDelete, tc.DenyPurge = true, true
	tc.Description, tc.Metadata = "hardened by ops", map[string]string{"owner": "ops"}
	tc.MaxAge = 30 * 24 * time.Hour
	if _, err := js.UpdateStream(ctx, tc); err != nil {
		t.Fatal(err)
	}
	dc := streamConfig(t, js, n.DLQStream)
	dc.DenyPurge = true
	dc.MaxAge = 60 * 24 * time.Hour
	dc.Duplicates = 10 * time.Minute
	if _, err := js.UpdateStream(ctx, dc); err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, n.TaskStream, n.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	cc := c.CachedInfo().Config
	cc.Description, cc.Metadata = "ops-managed", map[string]string{"owner": "ops"}
	if _, err := js.UpdateConsumer(ctx, n.TaskStream, cc); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PauseConsumer(ctx, n.TaskStream, n.Consumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	// A consumer starts with a larger max message size and a larger
	// dead-letter stream in its configuration, and a shorter ack wait.
	var logs logBuffer
	so := queue.StreamOptions{MaxMsgSize: 2 << 20, DLQMaxBytes: 4 << 30, Logger: logs.logger()}
	if err := queue.EnsureStreams(ctx, js, n, so); err != nil {
		t.Fatalf("EnsureStreams on hardened streams: %v", err)
	}
	if _, err := queue.EnsureConsumer(ctx, js, n, queue.ConsumerOptions{AckWait: 10 * time.Second, Logger: logs.logger()}); err != nil {
		t.Fatalf("EnsureConsumer on an annotated, paused consumer: %v", err)
	}

	got := streamConfig(t, js, n.TaskStream)
	if !got.DenyDelete || !got.DenyPurge || got.Description != "hardened by ops" || got.Metadata["owner"] != "ops" || got.MaxAge != 30*24*time.Hour {
		t.Errorf("task stream lost the operator's settings: %+v", got)
	}
	if got.MaxMsgSize != 2<<20 || got.Retention != jetstream.WorkQueuePolicy || !slices.Equal(got.Subjects, []string{"tasks.>"}) {
		t.Errorf("task stream does not have nodeq's settings: max_msg_size %d, retention %v, subjects %v", got.MaxMsgSize, got.Retention, got.Subjects)
	}
	gotDLQ := streamConfig(t, js, n.DLQStream)
	if !gotDLQ.DenyPurge || gotDLQ.DenyDelete || gotDLQ.MaxAge != 60*24*time.Hour || gotDLQ.Duplicates != 10*time.Minute {
		t.Errorf("dead-letter stream lost the operator's settings (a consumer must never shorten retention): %+v", gotDLQ)
	}
	if gotDLQ.MaxBytes != 4<<30 || gotDLQ.Discard != jetstream.DiscardNew {
		t.Errorf("dead-letter stream: max_bytes %d, discard %v; want 4 GiB, new", gotDLQ.MaxBytes, gotDLQ.Discard)
	}
	c, err = js.Consumer(ctx, n.TaskStream, n.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info := c.CachedInfo()
	if info.Config.AckWait != 10*time.Second || info.Config.Description != "ops-managed" || info.Config.Metadata["owner"] != "ops" || !info.Paused {
		t.Errorf("consumer after EnsureConsumer: ack_wait %v, description %q, metadata %v, paused %v; want 10s, the operator's, paused",
			info.Config.AckWait, info.Config.Description, info.Config.Metadata, info.Paused)
	}
	if l := logs.String(); !strings.Contains(l, "max_msg_size 1048576, nodeq wants 2097152") || !strings.Contains(l, "ack_wait 30s, nodeq wants 10s") {
		t.Errorf("the updates are not logged with what differed:\n%s", l)
	}

	// Once everything nodeq needs is in place, nothing is updated.
	logs = logBuffer{}
	so.Logger = logs.logger()
	if err := queue.EnsureStreams(ctx, js, n, so); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, js, n, queue.ConsumerOptions{AckWait: 10 * time.Second, Logger: logs.logger()}); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); l != "" {
		t.Errorf("a second start changed something:\n%s", l)
	}
}

// TestEnsureStreamsRejectsWhatNodeqCannotUse: a task stream without
// WorkQueue retention, a dead-letter stream without Limits retention, or a
// push consumer is an error that says so.
func TestEnsureStreamsRejectsWhatNodeqCannotUse(t *testing.T) {
	ctx := context.Background()
	n := queue.DefaultNames()
	for _, c := range []struct {
		name string
		pre  func(js jetstream.JetStream) error
		want string
	}{
		{"task stream with limits retention", func(js jetstream.JetStream) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n.TaskStream, Subjects: []string{"tasks.>"}})
			return err
		}, "task stream NODEQ_TASKS is not usable by nodeq: its retention is Limits, nodeq needs WorkQueue"},
		{"dead-letter stream with workqueue retention", func(js jetstream.JetStream) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n.DLQStream, Subjects: []string{"dlq.>"}, Retention: jetstream.WorkQueuePolicy})
			return err
		}, "dead-letter stream NODEQ_DLQ is not usable by nodeq: its retention is WorkQueue, nodeq needs Limits"},
		{"push consumer", func(js jetstream.JetStream) error {
			if err := queue.EnsureStreams(ctx, js, n, queue.StreamOptions{}); err != nil {
				return err
			}
			_, err := js.CreatePushConsumer(ctx, n.TaskStream, jetstream.ConsumerConfig{Durable: n.Consumer, DeliverSubject: "deliver.here", AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}, "it is a push consumer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := natstest.Server(t)
			_, js := natstest.Connect(t, srv)
			if err := c.pre(js); err != nil {
				t.Fatal(err)
			}
			err := queue.EnsureStreams(ctx, js, n, queue.StreamOptions{Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				_, err = queue.EnsureConsumer(ctx, js, n, queue.ConsumerOptions{Logger: slog.New(slog.DiscardHandler)})
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestEnsureStreamsWidensSubjects: a task stream capturing only some node
// types (and other subjects of the operator's) gets <prefix>.> added; the
// other subjects stay.
func TestEnsureStreamsWidensSubjects(t *testing.T) {
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	ctx := context.Background()
	n := queue.DefaultNames()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n.TaskStream, Subjects: []string{"tasks.echo", "legacy.jobs"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, js, n, queue.StreamOptions{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(t, js, n.TaskStream).Subjects; !slices.Equal(got, []string{"legacy.jobs", "tasks.>"}) {
		t.Fatalf("subjects %v, want [legacy.jobs tasks.>]", got)
	}
}

// TestEnsureWithoutUpdatePermission: a user that may look streams and the
// consumer up but not change them starts at once against existing ones
// whose settings differ from its configuration, warning about each
// difference; against missing ones it fails at once, saying why. nats.go
// itself would wait for the set-up context's deadline: the server never
// answers a request it refuses.
func TestEnsureWithoutUpdatePermission(t *testing.T) {
	srv := natstest.ServerWith(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "admin", Password: "a"},
			{Username: "worker", Password: "w", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}
	})
	connect := func(user, pw string) jetstream.JetStream {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, pw), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	admin, worker := connect("admin", "a"), connect("worker", "w")
	n := queue.DefaultNames()
	// A third of the consumer command's 30 s: a refusal noticed only by a
	// timeout fails the test instead of passing slowly.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	start := time.Now()
	err := queue.EnsureStreams(ctx, worker, n, queue.StreamOptions{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "task stream NODEQ_TASKS does not exist and this NATS user may not create it") ||
		!strings.Contains(err.Error(), `Permissions Violation for Publish to "$JS.API.STREAM.CREATE.NODEQ_TASKS"`) {
		t.Fatalf("missing streams, no permission to create: %v", err)
	}
	t.Logf("the refusal took %v to notice", time.Since(start))

	// The operator creates streams and consumer a little differently.
	so := queue.StreamOptions{Duplicates: time.Minute, DLQMaxAge: 7 * 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if err := queue.EnsureStreams(ctx, admin, n, so); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.EnsureConsumer(ctx, admin, n, queue.ConsumerOptions{MaxAckPending: 500, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	start = time.Now()
	if err := queue.EnsureStreams(ctx, worker, n, queue.StreamOptions{Logger: logs.logger()}); err != nil {
		t.Fatalf("existing streams, no permission to update: %v", err)
	}
	c, err := queue.EnsureConsumer(ctx, worker, n, queue.ConsumerOptions{Logger: logs.logger()})
	if err != nil {
		t.Fatalf("existing consumer, no permission to update: %v", err)
	}
	took := time.Since(start)
	t.Logf("set-up against differing streams without update permission took %v", took)
	if c.CachedInfo().Config.MaxAckPending != 500 {
		t.Fatalf("consumer config %+v", c.CachedInfo().Config)
	}
	l := logs.String()
	for _, want := range []string{
		"level=WARN msg=\"stream settings differ", "stream=NODEQ_TASKS", "duplicate window 1m0s, nodeq wants 2m0s",
		"stream=NODEQ_DLQ", "max_age 168h0m0s, nodeq wants at least 336h0m0s",
		"level=WARN msg=\"consumer settings differ", "max_ack_pending 500, nodeq wants 1000",
		`Permissions Violation for Publish to \"$JS.API.STREAM.UPDATE.NODEQ_DLQ\"`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}

	// What nodeq cannot run without is an error, also without permission.
	tc := streamConfig(t, admin, n.TaskStream)
	tc.Subjects = []string{"tasks.echo"}
	if _, err := admin.UpdateStream(ctx, tc); err != nil {
		t.Fatal(err)
	}
	err = queue.EnsureStreams(ctx, worker, n, queue.StreamOptions{Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "subjects [tasks.echo] do not cover tasks.>") || !strings.Contains(err.Error(), "may not update it") {
		t.Fatalf("subjects not covering tasks.>, no permission: %v", err)
	}
}
