package nodeq_test

import (
	"os"
	"strings"
	"testing"
)

// README's "Go API" code is Example's, line for line, so that it is known
// to run: a change to one without the other fails here.
func TestReadmeShowsTheExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Go API\n")
	_, code, ok2 := strings.Cut(section, "```go\n")
	code, _, ok3 := strings.Cut(code, "```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no Go code block under a \"## Go API\" heading")
	}
	_, body, ok := strings.Cut(string(example), "\nfunc Example() {\n")
	body, _, ok2 = strings.Cut(body, "\n}\n")
	if !ok || !ok2 {
		t.Fatal("example_test.go has no func Example")
	}
	var lines []string
	for line := range strings.Lines(body) {
		lines = append(lines, strings.TrimPrefix(line, "\t"))
	}
	dedented := strings.Join(lines, "")
	code = strings.Replace(code, "fmt.Println(string(res.Output)) // hello, world\n", "fmt.Println(string(res.Output))\n", 1)
	if len(code) < 200 || !strings.Contains(dedented, code) {
		t.Fatalf("README's Go API code is not a part of Example in example_test.go:\n%s", code)
	}
}
