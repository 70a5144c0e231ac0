// Command bench measures nodeq against the broker's own limit: every row
// runs next to a raw nats.go baseline on one embedded nats-server (file
// storage, default sync), and prints a table (and JSON with --json).
//
//	go run ./cmd/bench            # about 4 minutes on 2 cores, the external rows about 70 seconds of it
//	go run ./cmd/bench --quick    # a smoke run: small, 1 repetition
//	go run ./cmd/bench --hostile-memory  # only the worst-case memory mode, about 30 seconds
//	go run ./cmd/bench --external-only   # only the rows of nats-server and the consumer binary as separate processes
//
// The full run ends with those external rows (external.go); --external=false
// leaves them out.
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nodeq/nodeq/internal/task"
)

// Row is one line of the report.
type Row struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Nodeq    float64 `json:"nodeq"`
	Baseline float64 `json:"baseline"`
	// BaselineName says what nodeq is compared with.
	BaselineName string `json:"baseline_name"`
	// Ratio is nodeq/baseline.
	Ratio float64 `json:"ratio"`
	// Target is the goal for Ratio (or for Nodeq when the baseline is a bound), 0 if none.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// Report is the whole run.
type Report struct {
	When       time.Time `json:"when"`
	GoVersion  string    `json:"go"`
	CPUs       int       `json:"cpus"`
	Reps       int       `json:"repetitions"`
	MinSeconds float64   `json:"min_row_seconds"`
	Rows       []Row     `json:"rows"`
	// Memory is the worst-case memory mode's table (--hostile-memory).
	Memory []MemRow `json:"worst_case_memory,omitempty"`
}

type config struct {
	reps       int
	minSeconds float64
	quick      bool
	jsonOut    string
	cpuProfile string
	hostileMem bool
	// external adds the external rows (nats-server and the consumer
	// binary as processes) after the in-process ones; externalOnly runs
	// only them.
	external     bool
	externalOnly bool
}

func main() {
	var c config
	flag.IntVar(&c.reps, "reps", 3, "repetitions per measurement; the median is reported")
	flag.Float64Var(&c.minSeconds, "min-seconds", 2, "size each throughput measurement to run at least this long")
	flag.BoolVar(&c.quick, "quick", false, "small smoke run: 1 repetition, short rows")
	flag.StringVar(&c.jsonOut, "json", "", "also write the report as JSON to this file")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the nodeq 128-worker, async-ack consumption row")
	flag.BoolVar(&c.hostileMem, "hostile-memory", false, "run only the worst-case memory mode: the consumer binary's peak RSS while every worker holds a hostile max-size task")
	flag.BoolVar(&c.external, "external", true, "end with the external rows: a nats-server process and the consumer binary, as users run them, against a raw nats.go baseline over TCP")
	flag.BoolVar(&c.externalOnly, "external-only", false, "run only the external rows")
	flag.Parse()
	if c.quick {
		c.reps, c.minSeconds = 1, 0.2
	}
	// A signal cancels the run: the child processes it started are killed
	// and its temporary directory removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, c, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, rep)
	if len(rep.Memory) > 0 {
		printMemTable(os.Stdout, rep.Memory)
	}
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(c.jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// throughput sizes a measurement so it runs at least minSeconds, then
// repeats it and returns the median rate.
func throughput(c config, fn func(n int) (float64, error)) (float64, error) {
	n := 2000
	r, err := fn(n) // calibration, also a warm-up
	if err != nil {
		return 0, err
	}
	n = max(n, int(r*c.minSeconds*1.1))
	var rates []float64
	for range c.reps {
		r, err := fn(n)
		if err != nil {
			return 0, err
		}
		rates = append(rates, r)
	}
	return median(rates), nil
}

func run(ctx context.Context, c config, progress *os.File) (*Report, error) {
	dir, err := os.MkdirTemp("", "nodeq-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rep := &Report{When: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Reps: c.reps, MinSeconds: c.minSeconds}
	if c.externalOnly {
		rows, err := externalRows(ctx, c, planFor(c), dir, progress)
		if err != nil {
			return nil, err
		}
		rep.Rows = rows
		return rep, nil
	}
	b, err := newBench(dir + "/store")
	if err != nil {
		return nil, err
	}
	defer b.close()
	step := func(name string) { fmt.Fprintf(progress, "measuring %s...\n", name) }
	add := func(r Row, target string, met bool) {
		if r.Baseline != 0 {
			r.Ratio = r.Nodeq / r.Baseline
		}
		if target != "" {
			r.Target, r.Met = target, &met
		}
		rep.Rows = append(rep.Rows, r)
	}
	if c.hostileMem {
		rows, err := b.hostileMemory(ctx, dir, memCases(), progress)
		if err != nil {
			return nil, err
		}
		rep.Memory = rows
		for _, r := range rows {
			if r.Bound == 0 {
				continue // the base
			}
			mib := float64(r.PeakRSS) / (1 << 20)
			bound := float64(r.Bound) / (1 << 20)
			add(Row{Name: fmt.Sprintf("consumer peak RSS, max-size tasks %s, %d workers, max_inflight_bytes %d MiB", r.Tasks, r.Workers, r.Budget>>20),
				Unit: "MiB", Nodeq: mib, Baseline: bound, BaselineName: fmt.Sprintf("bound: base + %d × held + %d × prefetched", hostileK, prefetchK)}, "<= 1", mib <= bound)
		}
		return rep, nil
	}

	step("raw consumption (async ack, DoubleAck)")
	rawAsync, err := throughput(c, func(n int) (float64, error) { return b.consumeRaw(ctx, n, false) })
	if err != nil {
		return nil, err
	}
	rawDouble, err := throughput(c, func(n int) (float64, error) { return b.consumeRaw(ctx, n, true) })
	if err != nil {
		return nil, err
	}
	var nodeq16 float64
	for _, mode := range []struct{ ack, name string }{{"confirmed", "confirmed ack (default)"}, {"async", "async ack"}} {
		for _, w := range []int{1, 4, 16, 128} {
			baseline, baseName, target := rawAsync, "raw Consume, async Ack", ">= 0.8"
			step(fmt.Sprintf("nodeq consumption, %d workers, %s", w, mode.name))
			var stop func()
			if w == 128 && mode.ack == "async" && c.cpuProfile != "" {
				f, err := os.Create(c.cpuProfile)
				if err != nil {
					return nil, err
				}
				_ = pprof.StartCPUProfile(f)
				stop = func() { pprof.StopCPUProfile(); f.Close() }
			}
			r, err := throughput(c, func(n int) (float64, error) { return b.consumeNodeq(ctx, n, w, mode.ack, nil) })
			if stop != nil {
				stop()
			}
			if err != nil {
				return nil, err
			}
			if w == 16 && mode.ack == "confirmed" {
				nodeq16 = r
			}
			if w != 16 {
				target = ""
			}
			add(Row{Name: fmt.Sprintf("in-process: consume echo, %d workers, %s", w, mode.name), Unit: "msgs/s", Nodeq: r, Baseline: baseline, BaselineName: baseName}, target, r >= 0.8*baseline)
		}
	}
	_ = rawDouble

	step("latency")
	rate := min(2000, nodeq16/2)
	d := time.Duration(max(c.minSeconds, 1) * float64(time.Second))
	var nl, rl latencies
	for range c.reps {
		l, err := b.latency(ctx, rate, d, false)
		if err != nil {
			return nil, err
		}
		nl = append(nl, l...)
		l, err = b.latency(ctx, rate, d, true)
		if err != nil {
			return nil, err
		}
		rl = append(rl, l...)
	}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"p99.9", 0.999}} {
		add(Row{Name: fmt.Sprintf("publish-to-ack latency %s at %.0f/s", p.name, rate), Unit: "ms", Nodeq: nl.pct(p.q), Baseline: rl.pct(p.q),
			BaselineName: "raw Consume, async Ack"}, "", false)
	}

	step("retry path")
	transient := func(i int) task.Params {
		if i%10 == 0 {
			return task.Params{"kind": "Transport", "times": 1}
		}
		return task.Params{"probability": 0}
	}
	permanent := func(i int) task.Params {
		if i%100 == 0 {
			return task.Params{"kind": "Manifest"}
		}
		return task.Params{"probability": 0}
	}
	healthy := func(int) task.Params { return task.Params{"probability": 0} }
	base, err := throughput(c, func(n int) (float64, error) { return b.consumeNodeq(ctx, n, 16, "", healthy) })
	if err != nil {
		return nil, err
	}
	for _, r := range []struct {
		name   string
		params func(int) task.Params
	}{{"10% fail transiently once (1ms backoff), 16 workers", transient}, {"1% fail permanently (dead-lettered), 16 workers", permanent}} {
		v, err := throughput(c, func(n int) (float64, error) { return b.consumeNodeq(ctx, n, 16, "", r.params) })
		if err != nil {
			return nil, err
		}
		add(Row{Name: r.name, Unit: "msgs/s", Nodeq: v, Baseline: base, BaselineName: "nodeq, no faults"}, "", false)
	}

	step("producer")
	pn, err := throughput(c, func(n int) (float64, error) { return b.publishNodeq(ctx, n) })
	if err != nil {
		return nil, err
	}
	pr, err := throughput(c, func(n int) (float64, error) { return b.publishRaw(ctx, n) })
	if err != nil {
		return nil, err
	}
	add(Row{Name: "producer bulk publish (window 256)", Unit: "msgs/s", Nodeq: pn, Baseline: pr, BaselineName: "raw PublishMsgAsync loop"}, ">= 0.8", pn >= 0.8*pr)

	step("replay")
	rn, err := throughput(c, func(n int) (float64, error) { return b.replayNodeq(ctx, n) })
	if err != nil {
		return nil, err
	}
	rr, err := throughput(c, func(n int) (float64, error) { return b.replayRaw(ctx, n) })
	if err != nil {
		return nil, err
	}
	add(Row{Name: "dlq replay", Unit: "records/s", Nodeq: rn, Baseline: rr, BaselineName: "raw PublishMsg, one at a time"}, ">= 0.5", rn >= 0.5*rr)

	step("breaker reaction")
	var reacts, started []float64
	for range c.reps {
		r, n, err := b.breakerReaction(ctx)
		if err != nil {
			return nil, err
		}
		reacts = append(reacts, float64(r)/float64(time.Millisecond))
		started = append(started, float64(n))
	}
	react, late := median(reacts), median(started)
	add(Row{Name: "breaker: trip to prefetched tasks handed back", Unit: "ms", Nodeq: react, Baseline: 100, BaselineName: "target"}, "<= 1", react <= 100)
	add(Row{Name: "breaker: tasks started after the trip", Unit: "tasks", Nodeq: late, BaselineName: "target: none"}, "0", late == 0)

	step("consumer memory")
	pending := 10000
	rss, err := b.consumerRSS(ctx, dir, pending)
	if err != nil {
		return nil, err
	}
	mib := float64(rss) / (1 << 20)
	add(Row{Name: fmt.Sprintf("consumer peak RSS, %d tasks pending, 16 busy", pending), Unit: "MiB", Nodeq: mib, Baseline: 100, BaselineName: "target"}, "< 1", mib < 100)

	if c.external {
		rows, err := externalRows(ctx, c, planFor(c), dir, progress)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	return rep, nil
}

func printTable(w *os.File, rep *Report) {
	fmt.Fprintf(w, "nodeq benchmark, %s, %s, %d CPUs, median of %d, rows >= %.1fs\n\n", rep.When.Format(time.RFC3339), rep.GoVersion, rep.CPUs, rep.Reps, rep.MinSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "row\tunit\tnodeq\tbaseline\tratio\ttarget\t\tbaseline is\t")
	for _, r := range rep.Rows {
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "met", false: "MISSED"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.2f\t%s\t%s\t%s\t\n", r.Name, r.Unit, r.Nodeq, r.Baseline, r.Ratio, r.Target, met, r.BaselineName)
	}
	tw.Flush()
}
