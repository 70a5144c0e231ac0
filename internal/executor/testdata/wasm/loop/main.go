// Command loop never returns and never calls the host: only the runtime's
// context check can stop it (the timeout test).
package main

var n uint64

func main() {
	for {
		n++
	}
}
