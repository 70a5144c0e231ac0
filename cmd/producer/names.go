package main

import (
	"github.com/spf13/pflag"

	"github.com/nodeq/nodeq/internal/queue"
)

// nameFlags are the one set of name flags every command takes: the
// names.* settings of the consumers, with their defaults.
type nameFlags struct {
	taskStream, taskPrefix, dlqStream, dlqPrefix, consumer string
}

func (n *nameFlags) register(pf *pflag.FlagSet) {
	d := queue.DefaultNames()
	pf.StringVar(&n.taskStream, "task-stream", d.TaskStream, "task stream (names.task_stream)")
	pf.StringVar(&n.taskPrefix, "task-prefix", d.TaskPrefix, "subject prefix of tasks (names.task_prefix): tasks are published, and replayed, only on <prefix>.<node_type>")
	pf.StringVar(&n.dlqStream, "dlq-stream", d.DLQStream, "dead-letter stream (names.dlq_stream)")
	pf.StringVar(&n.dlqPrefix, "dlq-prefix", d.DLQPrefix, "subject prefix of dead-letter records (names.dlq_prefix)")
	pf.StringVar(&n.consumer, "consumer", d.Consumer, "durable consumer the fleet shares (names.consumer)")
}

// field is one name flag and where its value goes in queue.Names.
type field struct {
	flag  string
	value string
	set   func(*queue.Names, string)
}

func (n *nameFlags) fields() []field {
	return []field{
		{"task-stream", n.taskStream, func(q *queue.Names, v string) { q.TaskStream = v }},
		{"task-prefix", n.taskPrefix, func(q *queue.Names, v string) { q.TaskPrefix = v }},
		{"dlq-stream", n.dlqStream, func(q *queue.Names, v string) { q.DLQStream = v }},
		{"dlq-prefix", n.dlqPrefix, func(q *queue.Names, v string) { q.DLQPrefix = v }},
		{"consumer", n.consumer, func(q *queue.Names, v string) { q.Consumer = v }},
	}
}

// resolve returns the names the flags give, resolved and validated once
// by queue.Names.Resolve. A bad name is a usage error naming its flag; an
// empty one too (Resolve would take the default, which an operator who
// wrote --consumer "$UNSET" did not mean).
func (n *nameFlags) resolve() (queue.Names, error) {
	var names queue.Names
	for _, f := range n.fields() {
		if f.value == "" {
			return queue.Names{}, usagef("--%s is empty", f.flag)
		}
		f.set(&names, f.value)
	}
	resolved, err := names.Resolve()
	if err == nil {
		return resolved, nil
	}
	// Say which flag: the first whose value is wrong with every other name
	// at a default that cannot clash with it.
	d := queue.DefaultNames()
	for _, f := range n.fields() {
		alone := d
		f.set(&alone, f.value)
		if alone.TaskPrefix == alone.DLQPrefix { // a prefix set to the other's default
			if f.flag == "task-prefix" {
				alone.DLQPrefix = d.TaskPrefix
			} else {
				alone.TaskPrefix = d.DLQPrefix
			}
		}
		if err := alone.Validate(); err != nil {
			return queue.Names{}, usagef("--%s: %w", f.flag, err)
		}
	}
	// Each is fine alone: they clash (the two prefixes are the same).
	return queue.Names{}, usagef("--task-prefix %q and --dlq-prefix %q: %w", n.taskPrefix, n.dlqPrefix, err)
}
