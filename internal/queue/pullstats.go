package queue

// Read-only counts of a running Puller, for the process registry and
// status displays. They are zero before Run starts and after it returns.

// Prefetched is how many delivered tasks wait for a worker now.
func (p *Puller) Prefetched() int {
	p.room.mu.Lock()
	defer p.room.mu.Unlock()
	return len(p.room.queue)
}

// InFlight is how many tasks the workers are handling now.
func (p *Puller) InFlight() int {
	p.mu.Lock()
	l := p.loop
	p.mu.Unlock()
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.running {
		slot := &l.running[i]
		slot.mu.Lock()
		if slot.msg != nil {
			n++
		}
		slot.mu.Unlock()
	}
	return n
}
