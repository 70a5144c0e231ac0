// Package nodeq embeds nodeq in a Go program: register Go functions as node
// types, run a consumer in-process with the same configuration, retries,
// circuit breaker, dead letters and metrics as cmd/consumer, and publish
// tasks and wait for their results.
//
// A program needs nothing else than this package: StartServer runs a
// nats-server with JetStream in the process, or Config.NATS.URL points at
// an existing NATS server or cluster.
//
//	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: dir})
//	cfg := nodeq.DefaultConfig()
//	cfg.NATS.URL = srv.URL()
//	c, err := nodeq.NewConsumer(cfg)
//	err = c.Handle("greet", func(ctx context.Context, t *nodeq.Task) ([]byte, error) {
//		return []byte("hello, " + string(t.Payload)), nil
//	})
//	err = c.Start(ctx)
//	defer c.Stop()
//	client, err := nodeq.NewClient(cfg)
//	res, err := client.Call(ctx, "greet", []byte("world")) // res.Output is "hello, world"
//
// # Handlers and errors
//
// A Handler's plain error is transient: the task is retried in process
// with backoff (retry.*), then handed back to JetStream for a later
// delivery (redelivery.*), then dead-lettered with reason
// retries_exhausted. Wrap an error with Permanent to dead-letter the task
// at once (bad input that no retry can fix). A panic in a handler is
// recovered: the process goes on, and the task is dead-lettered at once
// with the panic's stack in its record. Tasks are delivered at least once:
// make handlers idempotent, with Task.ID as the idempotency key.
//
// # Wire format
//
// Client publishes the documented task envelope (docs/wire-format.md), so
// producers in other languages and the nodeq producer command reach Go
// handlers too, and Client reaches node types run by cmd/consumer.
//
// More in docs/go-api.md.
package nodeq
