package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	rulesFile     = "prometheus/nodeq-alerts.yml"
	ruleTestsFile = "prometheus/nodeq-alerts_test.yml"
	runbookFile   = "../docs/operations.md"
)

// TestAlertRules runs nodeq-alerts_test.yml, as `promtool test rules`
// would: every alert fires in the scenarios where it must, when it must,
// with the labels and annotations it must, and nowhere else.
func TestAlertRules(t *testing.T) {
	tests, err := loadUnitTests(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(tests.RuleFiles) == 0 || len(tests.Tests) == 0 {
		t.Fatalf("%s: no rule_files or no tests", ruleTestsFile)
	}
	groups, err := loadRules(tests.RuleFiles...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range tests.Tests {
		t.Run(tg.Name, func(t *testing.T) {
			diffs, err := tg.run(t.Context(), groups, tests.EvaluationInterval.std())
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range diffs {
				t.Error(d)
			}
		})
	}
}

// TestEveryAlertIsTested fails for an alert that has no scenario where it
// fires, or none where it is checked and never fires (a healthy one: an
// alert checked silent only before its `for:` ran out does not count).
func TestEveryAlertIsTested(t *testing.T) {
	tests, err := loadUnitTests(ruleTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := loadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tg := range tests.Tests {
		firesHere, checkedHere := map[string]bool{}, map[string]bool{}
		for _, c := range tg.AlertRuleTests {
			checkedHere[c.Alertname] = true
			if len(c.ExpAlerts) > 0 {
				firesHere[c.Alertname] = true
				fires[c.Alertname] = true
			}
		}
		for name := range checkedHere {
			if !firesHere[name] {
				silent[name] = true
			}
		}
	}
	n := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] {
				t.Errorf("%s: alert %s fires in no test of %s", rulesFile, r.Alert, ruleTestsFile)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: alert %s has no scenario in %s where it is checked and never fires", rulesFile, r.Alert, ruleTestsFile)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
}

// TestAlertRulesAreActionable checks what an alert tells whoever gets it:
// a severity, a summary, a description, and a runbook section of
// docs/operations.md that exists.
func TestAlertRulesAreActionable(t *testing.T) {
	groups, err := loadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(doc))
	var names []string
	for _, g := range groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule (%s) in the alerts file", g.Name, r.Record)
				continue
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			page, anchor, _ := strings.Cut(r.Annotations["runbook"], "#")
			if page != "docs/operations.md" || !anchors[anchor] {
				t.Errorf("alert %s: runbook %q is not a section of docs/operations.md", r.Alert, r.Annotations["runbook"])
			}
			if anchor != strings.ToLower(r.Alert) {
				t.Errorf("alert %s: runbook section %q, want its own (#%s)", r.Alert, anchor, strings.ToLower(r.Alert))
			}
		}
	}
	if unique := slices.Compact(slices.Sorted(slices.Values(names))); len(unique) != len(names) {
		t.Errorf("alert names are not unique: %v", names)
	}
}

// headingAnchors returns the anchors GitHub gives a Markdown page's
// headings (outside code blocks): lower case, spaces to hyphens,
// punctuation dropped.
func headingAnchors(doc string) map[string]bool {
	drop := regexp.MustCompile("[^a-z0-9 _-]")
	anchors := map[string]bool{}
	inCode := false
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}
