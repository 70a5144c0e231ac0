package executor

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nodeq/nodeq/internal/resilience"
	"github.com/nodeq/nodeq/internal/task"
)

// taskEnv returns the NODEQ_* variables of a task, as the process executor
// sets them: NODEQ_TASK_ID, NODEQ_NODE_ID, NODEQ_NODE_TYPE,
// NODEQ_CORRELATION_ID, NODEQ_PARAMS (JSON), NODEQ_PAYLOAD_ENCODING and
// NODEQ_RUN_ID. A value with a NUL byte cannot be passed and fails the task
// permanently (Manifest).
func taskEnv(name string, t *task.Envelope, runID string) ([]string, error) {
	params, err := json.Marshal(t.Params)
	if err != nil {
		return nil, resilience.Wrap(resilience.Manifest, fmt.Errorf("wasm %s: params cannot be passed as JSON in NODEQ_PARAMS: %w", name, err))
	}
	fromTask := []struct{ name, value, what string }{
		{"NODEQ_TASK_ID", t.ID, "the task ID"},
		{"NODEQ_NODE_ID", t.NodeID, "the node ID"},
		{"NODEQ_NODE_TYPE", t.NodeType, "the node type"},
		{"NODEQ_CORRELATION_ID", t.CorrelationID, "the correlation ID"},
		{"NODEQ_PARAMS", string(params), "the params as JSON"},
	}
	env := make([]string, 0, len(fromTask)+2)
	for _, v := range fromTask {
		if i := strings.IndexByte(v.value, 0); i >= 0 {
			return nil, resilience.Errorf(resilience.Manifest,
				"wasm %s: %s (%s) contains a NUL byte at offset %d, which an environment variable cannot carry",
				name, v.name, v.what, i)
		}
		env = append(env, v.name+"="+v.value)
	}
	return append(env,
		"NODEQ_PAYLOAD_ENCODING="+t.PayloadEncoding.String(),
		RunIDEnv+"="+runID,
	), nil
}
