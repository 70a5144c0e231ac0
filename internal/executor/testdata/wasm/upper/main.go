// upper/main.go
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodeq-error: Io:", err)
		os.Exit(74)
	}
	if len(in) == 0 {
		fmt.Fprintln(os.Stderr, "nodeq-error: Manifest: empty payload")
		os.Exit(65)
	}
	os.Stdout.Write(bytes.ToUpper(in))
}
