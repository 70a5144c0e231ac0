package config

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Resolved returns a copy of the configuration with the values filled in
// that keys left out (or 0) stand for: each node's executor and its
// executor's defaults (sleep's max_duration, process's max_output, http's
// max_response, wasm's memory_limit and max_output, worker's max_output,
// pool_size and startup_timeout), each node retry block's keys taken from
// the global retry, empty names, and consumer.max_payload, which is
// streams.max_msg_size when 0 or larger. It runs the same as c; consumer
// --check-config prints it. Sizes the consumer decides at start from the
// server (streams.max_msg_size 0, and then consumer.max_payload 0) stay 0;
// Redacted says so in a comment.
func (c *Config) Resolved() *Config {
	cp := *c
	n := c.QueueNames()
	cp.Names = Names{TaskStream: n.TaskStream, TaskPrefix: n.TaskPrefix, DLQStream: n.DLQStream, DLQPrefix: n.DLQPrefix, Consumer: n.Consumer}
	// The consumer caps a task's body at its task size limit, which is
	// streams.max_msg_size when that is set (and the server can take it:
	// else the consumer does not start).
	if limit := c.Streams.MaxMsgSize; limit > 0 && (cp.Consumer.MaxPayload == 0 || cp.Consumer.MaxPayload > limit) {
		cp.Consumer.MaxPayload = limit
	}
	cp.Nodes = make(map[string]Node, len(c.Nodes))
	for name, node := range c.Nodes {
		if kind, ok := kindOf(name, node); ok {
			node = kind.resolve(node)
		}
		if node.Retry != nil {
			r := node.Retry.inherit(c.Retry)
			node.Retry = &r
		}
		cp.Nodes[name] = node
	}
	return &cp
}

// pruneNodes removes from each node of an encoded configuration the keys
// its executor does not take, and a retry block it does not have.
func (c *Config) pruneNodes(doc *yaml.Node) {
	nodes := valueOf(doc, "nodes")
	if nodes == nil || nodes.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(nodes.Content); i += 2 {
		name, node := nodes.Content[i].Value, nodes.Content[i+1]
		kind, ok := kindOf(name, c.Nodes[name])
		if !ok || node.Kind != yaml.MappingNode {
			continue
		}
		var kept []*yaml.Node
		for j := 0; j+1 < len(node.Content); j += 2 {
			key, value := node.Content[j].Value, node.Content[j+1]
			if key == "retry" && value.Tag == "!!null" {
				continue
			}
			if slices.Contains(commonNodeKeys, key) || slices.Contains(kind.keys, key) {
				kept = append(kept, node.Content[j], value)
			}
		}
		node.Content = kept
	}
}

// zeroMeanings say what a key's zero value stands for where no value can
// be filled in for it: the consumer decides it at start, or zero means
// "none". Redacted writes them as comments next to the zero values.
var zeroMeanings = map[string]string{
	"streams.max_msg_size": "decided at start: the largest task whose dead-letter record fits the server's max_payload (992KiB for 1MiB)",
	"consumer.max_payload": "streams.max_msg_size's, decided at start",
}

// nodeZeroMeanings are zeroMeanings for node keys.
var nodeZeroMeanings = map[string]string{
	"timeout":               "none of its own: a run ends only with the task's deadline, if it has one",
	"concurrency":           "no limit of its own: consumer.workers bounds it",
	"dir":                   "the consumer's working directory",
	"max_tasks_per_process": "never replaced",
}

// annotateZeros comments the zero values of an encoded configuration that
// zeroMeanings and nodeZeroMeanings explain.
func (c *Config) annotateZeros(doc *yaml.Node) {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	for key, meaning := range zeroMeanings {
		section, name, _ := strings.Cut(key, ".")
		if v := valueOf(valueOf(root, section), name); v != nil && c.lookup(key).IsZero() {
			v.LineComment = meaning
		}
	}
	nodes := valueOf(root, "nodes")
	for name, n := range c.Nodes {
		node, v := valueOf(nodes, name), reflect.ValueOf(n)
		for key, meaning := range nodeZeroMeanings {
			if value := valueOf(node, key); value != nil && v.FieldByIndex(nodeField(key).Index).IsZero() {
				value.LineComment = meaning
			}
		}
	}
}

// valueOf returns the value of key in a mapping node, or nil.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
