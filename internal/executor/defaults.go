package executor

// Defaults of the executors' size limits: what a zero ProcessConfig.MaxOutput
// or HTTPConfig.MaxResponse means. The configuration shows them as the
// values a node runs with.
const (
	// DefaultMaxOutput is the default cap of a process node's stdout: 16 MiB.
	DefaultMaxOutput = defaultMaxOutput
	// DefaultMaxResponse is the default cap of an http node's response body: 16 MiB.
	DefaultMaxResponse = defaultMaxOutput
)
