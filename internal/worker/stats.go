package worker

// Held is how many tasks this worker holds now because the dead-letter
// stream refused their records: each keeps its outcome, and only the
// store is retried.
func (w *Worker) Held() int {
	w.held.mu.Lock()
	defer w.held.mu.Unlock()
	return max(w.held.n, 0)
}
