// Command fail fails as its params say: NODEQ_PARAMS {"exit": 75} exits
// with that status; {"report": "Transport: refused"} also writes the
// "nodeq-error:" line on stderr; {"panic": true} panics (exit status 2).
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	var p struct {
		Exit   int    `json:"exit"`
		Report string `json:"report"`
		Panic  bool   `json:"panic"`
	}
	if err := json.Unmarshal([]byte(os.Getenv("NODEQ_PARAMS")), &p); err != nil {
		fmt.Fprintln(os.Stderr, "bad params:", err)
		os.Exit(64)
	}
	if p.Panic {
		panic("asked to")
	}
	fmt.Fprintln(os.Stderr, "failing as asked")
	if p.Report != "" {
		fmt.Fprintln(os.Stderr, "nodeq-error: "+p.Report)
	}
	os.Exit(p.Exit)
}
