// Command echo copies stdin to stdout: the wasm executor's echo node and
// its benchmark.
package main

import (
	"io"
	"os"
)

func main() {
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		os.Exit(74)
	}
}
