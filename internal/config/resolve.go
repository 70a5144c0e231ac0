package config

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// Resolved returns a copy of the configuration with the defaults filled in
// that keys left out stand for: each node's executor and its executor's
// defaults (sleep's max_duration, process's max_output, http's
// max_response), each node retry block's keys taken from the global retry,
// and empty names. It runs the same as c; consumer --check-config prints it.
// Sizes of 0 that the server decides at start (streams.max_msg_size,
// consumer.max_payload) stay 0.
func (c *Config) Resolved() *Config {
	cp := *c
	n := c.QueueNames()
	cp.Names = Names{TaskStream: n.TaskStream, TaskPrefix: n.TaskPrefix, DLQStream: n.DLQStream, DLQPrefix: n.DLQPrefix, Consumer: n.Consumer}
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
