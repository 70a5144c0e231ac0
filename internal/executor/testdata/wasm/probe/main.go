// Command probe reports what the sandbox lets it see. NODEQ_PARAMS says
// what to do: {"do": "env"} prints its environment, one variable a line;
// {"do": "read", "path": p} prints the file; {"do": "write", "path": p}
// creates it; {"do": "spew", "bytes": n} writes n bytes to stdout. A
// failure exits with status 74 and the error on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	var p struct {
		Do    string `json:"do"`
		Path  string `json:"path"`
		Bytes int    `json:"bytes"`
	}
	if err := json.Unmarshal([]byte(os.Getenv("NODEQ_PARAMS")), &p); err != nil {
		fmt.Fprintln(os.Stderr, "bad params:", err)
		os.Exit(64)
	}
	var err error
	switch p.Do {
	case "env":
		for _, kv := range os.Environ() {
			fmt.Println(kv)
		}
	case "read":
		var b []byte
		if b, err = os.ReadFile(p.Path); err == nil {
			_, err = os.Stdout.Write(b)
		}
	case "write":
		err = os.WriteFile(p.Path, []byte("written"), 0o644)
	case "spew":
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for n := p.Bytes; n > 0 && err == nil; n -= len(chunk) {
			_, err = os.Stdout.Write(chunk[:min(n, len(chunk))])
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown do %q\n", p.Do)
		os.Exit(64)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(74)
	}
}
