package nodeq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"time"

	"github.com/nodeq/nodeq"
)

// A program that registers a Go handler, runs the consumer (with an
// embedded NATS server), publishes a task and prints its result. README.md
// shows this code.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "nodeq-example")
	check(err)
	defer os.RemoveAll(dir)

	cfg := nodeq.DefaultConfig() // or nodeq.LoadConfig("nodeq.yaml"); no NATS URL: an embedded server
	cfg.Embedded.Listen, cfg.Embedded.StoreDir = "127.0.0.1:0", dir
	c, err := nodeq.NewConsumer(cfg)
	check(err)
	check(c.Handle("greet", func(ctx context.Context, t *nodeq.Task) ([]byte, error) {
		return []byte("hello, " + string(t.Payload)), nil
	}))
	check(c.Start(ctx)) // sets up the streams; runs until ctx is done or Stop
	defer c.Stop()
	client, err := c.Client()
	check(err)
	defer client.Close()
	res, err := client.Call(ctx, "greet", []byte("world"))
	check(err)
	fmt.Println(string(res.Output))
	// Output: hello, world
}

// A handler's plain error is transient: the task is retried. An error
// wrapped with Permanent dead-letters the task at once, and Call returns
// a *TaskError.
func ExamplePermanent() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "nodeq-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := nodeq.StartServer(nodeq.ServerOptions{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	cfg := nodeq.DefaultConfig()
	cfg.NATS.URL = srv.URL()
	consumer, err := nodeq.NewConsumer(cfg)
	if err != nil {
		log.Fatal(err)
	}

	err = consumer.Handle("double", func(ctx context.Context, t *nodeq.Task) ([]byte, error) {
		n, err := strconv.Atoi(string(t.Payload))
		if err != nil {
			// No retry can fix this input: dead-letter it now.
			return nil, nodeq.Permanent(fmt.Errorf("payload %q is not a number", t.Payload))
		}
		if t.Attempt == 1 {
			// Retried in process after retry.delay (100ms by default).
			return nil, errors.New("downstream busy")
		}
		return []byte(strconv.Itoa(2 * n)), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := consumer.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer consumer.Stop()
	client, err := nodeq.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	res, err := client.Call(ctx, "double", []byte("21"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s after %d attempts\n", res.Output, res.Attempts)

	_, err = client.Call(ctx, "double", []byte("twenty"))
	var failed *nodeq.TaskError
	if errors.As(err, &failed) {
		fmt.Printf("dead-lettered (%s): %s\n", failed.Result.ErrorKind, failed.Result.Error)
	}
	// Output:
	// 42 after 2 attempts
	// dead-lettered (Other): payload "twenty" is not a number
}

// LoadConfig reads the YAML file cmd/consumer reads; its node types run
// beside the Go handlers.
func ExampleLoadConfig() {
	dir, err := os.MkdirTemp("", "nodeq-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := dir + "/nodeq.yaml"
	yaml := "consumer:\n  workers: 4\nretry:\n  attempts: 5\nnodes:\n  echo: {}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		log.Fatal(err)
	}

	cfg, err := nodeq.LoadConfig(path)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Consumer.Workers *= 2 // a program can change any setting
	consumer, err := nodeq.NewConsumer(cfg)
	if err != nil {
		log.Fatal(err)
	}
	err = consumer.Handle("greet", func(ctx context.Context, t *nodeq.Task) ([]byte, error) {
		return []byte("hello"), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.Consumer.Workers, cfg.Retry.Attempts, consumer.NodeTypes())
	// Output: 8 5 [echo greet]
}
