package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodeq/nodeq/internal/fleet"
)

// Widths of the process table's free-text columns, in runes.
const (
	statusIDWidth        = 48
	statusVersionWidth   = 24
	statusNodeTypesWidth = 32
)

// processesSummary is the status line about the process registry.
func processesSummary(st *fleet.Status) string {
	if st.ProcessesUnknown != "" {
		return "unknown: " + cell(st.ProcessesUnknown, 200)
	}
	s := fmt.Sprintf("%d live", len(st.Processes))
	if len(st.Processes) == 0 {
		s = "none announced"
	}
	if st.ProcessesLeftOut > 0 {
		s += fmt.Sprintf(", %d more not listed", st.ProcessesLeftOut)
	}
	if st.ProcessesMalformed > 0 {
		s += fmt.Sprintf(", %d unreadable entries skipped", st.ProcessesMalformed)
	}
	return s
}

// printProcesses prints one line per process, ages as of now. Every
// string comes from a shared bucket: escaped, then cut (cell), so that
// escapes cannot widen a column.
func printProcesses(w io.Writer, ps []fleet.ProcessInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tNODE TYPES\tWORKERS\tIN FLIGHT\tPREFETCHED\tHELD\tBREAKER\tPAUSED\tLAST SEEN")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s ago\n",
			cell(p.ID, statusIDWidth), cell(p.Version, statusVersionWidth), nodeTypesCell(p),
			p.Workers, p.InFlight, p.Prefetched, p.DLQHeld, breakerCell(p.Breaker, now), pausedCell(p), age(now.Sub(p.LastSeen)))
	}
	return tw.Flush()
}

// nodeTypesCell lists the node types, clipped, with how many more there are.
func nodeTypesCell(p fleet.ProcessInfo) string {
	s := cell(strings.Join(p.NodeTypes, ","), statusNodeTypesWidth)
	if s == "" {
		s = "-"
	}
	if p.MoreNodeTypes > 0 {
		s += fmt.Sprintf(" +%d", p.MoreNodeTypes)
	}
	return s
}

// breakerCell is the breaker's state and for how long, e.g. "open for
// 3s" or "fleet closed for 2h05m".
func breakerCell(b fleet.ProcessBreaker, now time.Time) string {
	if b.State == "" {
		return "off"
	}
	s := cell(b.State, 16)
	if b.Scope == "fleet" {
		s = "fleet " + s
	}
	if !b.Since.IsZero() {
		s += " for " + age(now.Sub(b.Since))
	}
	return s
}

func pausedCell(p fleet.ProcessInfo) string {
	switch {
	case p.Stopping:
		return "stopping"
	case p.Paused:
		return "yes"
	}
	return "no"
}

// age is d, rounded down, in at most two units: 45s, 12m03s, 5h07m, 3d04h.
func age(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}
