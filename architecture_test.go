package nodeq_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedImports is the dependency rule of ARCHITECTURE.md as data: the
// module's packages each package may import. Commands wire; messaging
// moves; executors run; resilience decides; dlq records. An import not
// listed here fails TestDependencyDirection: add it here, and to the
// package map in ARCHITECTURE.md, only if the direction still holds.
var allowedImports = map[string][]string{
	// The wire format, and leaves everything may use.
	"internal/task":       nil,
	"internal/version":    nil,
	"internal/metrics":    nil,
	"internal/resilience": nil,
	"internal/tracing":    nil,
	// Connecting, topology and messaging, records of failures.
	"internal/natsconn": {"internal/task"},
	"internal/queue":    {"internal/task", "internal/tracing"},
	"internal/dlq":      {"internal/task"},
	// Acting on the fleet as a whole; running nodes.
	"internal/fleet":    {"internal/queue", "internal/resilience"},
	"internal/executor": {"internal/resilience", "internal/task", "internal/tracing"},
	// Settling one delivery.
	"internal/worker": {"internal/dlq", "internal/executor", "internal/metrics", "internal/queue", "internal/resilience", "internal/task", "internal/tracing", "internal/version"},
	// The configuration knows every library's settings and builds the executors.
	"internal/config": {"internal/dlq", "internal/executor", "internal/natsconn", "internal/queue", "internal/resilience", "internal/task", "internal/tracing"},
	// The operator's web console: acts through the fleet and dlq libraries.
	"internal/console": {"internal/dlq", "internal/fleet", "internal/queue", "internal/resilience", "internal/version"},
	// The composition root of a consumer process.
	"internal/consumer": {"internal/config", "internal/dlq", "internal/executor", "internal/fleet", "internal/metrics", "internal/natsconn",
		"internal/queue", "internal/resilience", "internal/task", "internal/tracing", "internal/version", "internal/worker"},
	// Test helpers.
	"internal/natstest": {"internal/natsconn"},
	// Operators' views: alert rules and a dashboard, as files; its tests
	// check them against the series internal/metrics registers.
	"deploy": {"internal/metrics"},
	// The public Go API: a facade over the composition root.
	"": {"internal/config", "internal/consumer", "internal/dlq", "internal/executor", "internal/metrics", "internal/natsconn",
		"internal/queue", "internal/resilience", "internal/task", "internal/version", "internal/worker"},
}

// commands and tests may import any package of the module but a command.
var anyButCommands = []string{"cmd/", "integration"}

// TestDependencyDirection fails when a package of the module imports one
// the dependency rule does not allow, or when a new package is not in the
// rule yet.
func TestDependencyDirection(t *testing.T) {
	const module = "github.com/nodeq/nodeq"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		var own []string
		for _, imp := range fields[1:] {
			if rest, ok := strings.CutPrefix(imp, module); ok {
				own = append(own, strings.TrimPrefix(rest, "/"))
			}
		}
		if slices.ContainsFunc(anyButCommands, func(p string) bool { return strings.HasPrefix(pkg, p) }) {
			for _, imp := range own {
				if strings.HasPrefix(imp, "cmd/") {
					t.Errorf("%s imports the command %s: commands are the top of the graph; move what they share into a library package", pkg, imp)
				}
			}
			continue
		}
		allowed, known := allowedImports[pkg]
		if !known {
			t.Errorf("package %q is not in the dependency rule: add it to allowedImports and to ARCHITECTURE.md's package map", pkg)
			continue
		}
		for _, imp := range own {
			if !slices.Contains(allowed, imp) {
				t.Errorf("%q imports %q, against the dependency rule (ARCHITECTURE.md)", pkg, imp)
			}
		}
	}
}
