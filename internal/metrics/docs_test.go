package metrics

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// docRow is one row of the metrics table of docs/operations.md.
type docRow struct {
	kind   string   // counter, gauge or histogram
	labels []string // label names, sorted
	values string   // the "label values" cell
}

// docsTable reads the table under "## Metrics" in docs/operations.md: the
// rows whose first cell is a `nodeq_*` series.
func docsTable(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Metrics\n")
	if !ok {
		t.Fatal(`docs/operations.md has no "## Metrics" section`)
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	rows := map[string]docRow{}
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `nodeq_") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 5 {
			t.Fatalf("docs/operations.md: a metrics row needs 5 cells (series, type, labels, label values, meaning): %s", line)
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		if _, dup := rows[name]; dup {
			t.Errorf("docs/operations.md lists %s twice", name)
		}
		var labels []string
		for l := range strings.SplitSeq(cells[2], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels = append(labels, l)
			}
		}
		slices.Sort(labels)
		rows[name] = docRow{kind: strings.TrimSpace(cells[1]), labels: labels, values: cells[3]}
	}
	if len(rows) == 0 {
		t.Fatal("docs/operations.md: no metrics table under ## Metrics")
	}
	return rows
}

// docs/operations.md documents every nodeq_* series, and only those, with
// its type, its labels and every fixed value they take.
func TestDocsListEverySeries(t *testing.T) {
	_, reg := declared(t)
	rows := docsTable(t)
	got := gather(t, reg.Registry)
	for name, mf := range got {
		row, ok := rows[name]
		if !ok {
			t.Errorf("%s is not in docs/operations.md's metrics table", name)
			continue
		}
		if kind := strings.ToLower(mf.GetType().String()); row.kind != kind {
			t.Errorf("%s: documented as a %s; it is a %s", name, row.kind, kind)
		}
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		slices.Sort(labels)
		if !slices.Equal(row.labels, labels) {
			t.Errorf("%s: documented labels %v; it has %v", name, row.labels, labels)
		}
	}
	for name := range rows {
		if _, ok := got[name]; !ok {
			t.Errorf("docs/operations.md lists %s, which does not exist", name)
		}
	}
	// The fixed label values, each named in the row of every series with
	// that label (or in the row it refers to: "as `nodeq_tasks_total`").
	fixed := map[string][]string{
		"outcome":   outcomes,
		"reason":    append(slices.Clone(reasons), ReasonOther),
		"to":        breakerStates,
		"cause":     pullCauses,
		"node_type": {UnknownNodeType, InvalidNodeType},
	}
	// Only tasks whose node ran are timed: these take registered node types.
	ranOnly := []string{"nodeq_task_duration_seconds", "nodeq_task_queue_wait_seconds"}
	for name, row := range rows {
		values := row.values
		for other, r := range rows {
			if strings.Contains(values, "as `"+other+"`") {
				values += r.values
			}
		}
		for _, label := range row.labels {
			if label == "node_type" && slices.Contains(ranOnly, name) {
				continue
			}
			for _, v := range fixed[label] {
				if !strings.Contains(values, "`"+v+"`") {
					t.Errorf("%s: label %s takes `%s`, which docs/operations.md does not say", name, label, v)
				}
			}
		}
	}
}
