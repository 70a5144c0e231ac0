package worker

import (
	"context"
	"sync"
)

// isolation lets a task run alone in the process: a task whose earlier
// delivery ended without an outcome (the process holding it died, hung or
// lost its connection) runs only while no other task of this process runs,
// so that if it takes the process down again, it is the only one to blame.
// Tasks run shared otherwise. A task waiting to run alone goes first: tasks
// that come after it wait until it is done.
type isolation struct {
	mu      sync.Mutex
	shared  int  // tasks running shared
	alone   bool // a task runs alone
	waiting int  // tasks waiting to run alone
	changed chan struct{}
}

// enter waits until the task may run (alone, or shared) and returns the
// func that ends its run. It fails when ctx ends first.
func (g *isolation) enter(ctx context.Context, alone bool) (leave func(), err error) {
	g.mu.Lock()
	if alone {
		g.waiting++
	}
	for {
		if !g.alone && (alone && g.shared == 0 || !alone && g.waiting == 0) {
			if alone {
				g.waiting--
				g.alone = true
			} else {
				g.shared++
			}
			g.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { g.leave(alone) }) }, nil
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
			g.mu.Lock()
		case <-ctx.Done():
			g.mu.Lock()
			if alone {
				g.waiting--
				g.wake()
			}
			g.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

func (g *isolation) leave(alone bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if alone {
		g.alone = false
	} else {
		g.shared--
	}
	g.wake()
}

// wake tells every waiter that something changed; g.mu is held. With
// nobody waiting there is no channel and it costs nothing.
func (g *isolation) wake() {
	if g.changed != nil {
		close(g.changed)
		g.changed = nil
	}
}
