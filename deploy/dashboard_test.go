package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const dashboardFile = "grafana/nodeq-dashboard.json"

// dashboard is the part of a Grafana dashboard the tests check.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

// promDatasource is how every panel and target names its data source:
// the dashboard's DS_PROMETHEUS variable, chosen on import.
var promDatasource = datasource{Type: "prometheus", UID: "${DS_PROMETHEUS}"}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// TestDashboardIsWellFormed checks what Grafana needs to import the
// dashboard and show every panel: unique panel IDs, a Prometheus data
// source and at least one query on each, panels within the 24-column grid
// that do not overlap, and the variables the queries use.
func TestDashboardIsWellFormed(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 39 {
		t.Errorf("title %q, uid %q, schemaVersion %d: want a title, a uid and schemaVersion >= 39", d.Title, d.UID, d.SchemaVersion)
	}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v := vars["DS_PROMETHEUS"]; v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("variable DS_PROMETHEUS: type %q, query %s; want a prometheus datasource variable", v.Type, v.Query)
	}
	for _, name := range []string{"job", "instance"} {
		if v := vars[name]; v.Type != "query" || v.Datasource == nil || *v.Datasource != promDatasource {
			t.Errorf("variable %s: type %q, datasource %v; want a query of ${DS_PROMETHEUS}", name, v.Type, v.Datasource)
		}
	}
	ids := map[int]string{}
	for _, p := range d.Panels {
		if other, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.Type == "" {
			t.Errorf("panel %d: no title or no type", p.ID)
		}
		if p.Datasource == nil || *p.Datasource != promDatasource {
			t.Errorf("panel %q: datasource %v, want %v", p.Title, p.Datasource, promDatasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: no expr", p.Title, tg.RefID)
			}
			if tg.Datasource != nil && *tg.Datasource != promDatasource {
				t.Errorf("panel %q target %s: datasource %v, want %v", p.Title, tg.RefID, tg.Datasource, promDatasource)
			}
			for _, m := range grafanaVar.FindAllStringSubmatch(tg.Expr, -1) {
				if name := m[1] + m[2]; !strings.HasPrefix(name, "__") && vars[name].Name == "" {
					t.Errorf("panel %q target %s: uses $%s, which the dashboard does not define", p.Title, tg.RefID, name)
				}
			}
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is outside the 24-column grid", p.Title, g)
		}
		for _, q := range d.Panels {
			h := q.GridPos
			if q.ID < p.ID && g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", p.Title, q.Title)
			}
		}
	}
}

// grafanaVar matches a Grafana variable in a query: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)

// promQL returns a dashboard query as Prometheus gets it: Grafana's
// interval variables ($__rate_interval, ...) become 5m. The others may
// stand only in label values, where they are strings to the parser.
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVar.FindStringSubmatch(v)
		if strings.HasPrefix(m[1]+m[2], "__") {
			return "5m"
		}
		return v
	})
}

// filtersByVariables reports whether a selector keeps to the processes the
// dashboard's job and instance variables select.
func filtersByVariables(vs *parser.VectorSelector) bool {
	var job, instance bool
	for _, m := range vs.LabelMatchers {
		job = job || m.Name == "job" && m.Type == labels.MatchRegexp && m.Value == "$job"
		instance = instance || m.Name == "instance" && m.Type == labels.MatchRegexp && m.Value == "$instance"
	}
	return job && instance
}

// labelValuesQuery matches a variable's label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

// TestDashboardUsesNodeqSeries fails when a panel or a variable queries a
// series nodeq does not export, or a query Prometheus would not parse.
func TestDashboardUsesNodeqSeries(t *testing.T) {
	exported := nodeqSeries(t)
	d := loadDashboard(t)
	check := func(where, expr string) {
		names, err := seriesNames(promQL(expr))
		if err != nil {
			t.Errorf("%s: %q: %v", where, expr, err)
		}
		for _, n := range names {
			if !exported[n] {
				t.Errorf("%s queries %s, which nodeq does not export (exported: %s)", where, n, sortedKeys(exported))
			}
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			where := "panel " + p.Title + " target " + tg.RefID
			check(where, tg.Expr)
			selectors, _ := vectorSelectors(promQL(tg.Expr)) // check reported the error
			for _, vs := range selectors {
				if !filtersByVariables(vs) {
					t.Errorf(`%s: %s does not filter by job=~"$job" and instance=~"$instance"`, where, vs)
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			continue
		}
		m := labelValuesQuery.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		check("variable "+v.Name, m[1])
	}
}
