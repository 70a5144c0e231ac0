// Command alloc allocates without bound and keeps everything reachable:
// only the memory limit stops it (the out-of-memory test).
package main

var kept [][]byte

func main() {
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(i)
		}
		kept = append(kept, b)
	}
}
