package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// docTable returns the rows, as trimmed cells, of the table that follows a
// heading in a doc; header names the columns it must have.
func docTable(t *testing.T, doc, heading string, header ...string) [][]string {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q", doc, heading)
	}
	var rows [][]string
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != len(header) {
			t.Fatalf("%s: %d cells, want %d (%s): %s", doc, len(cells), len(header), strings.Join(header, ", "), line)
		}
		rows = append(rows, cells)
	}
	if len(rows) < 2 || !slices.Equal(rows[0], header) {
		t.Fatalf("%s: the table under %q has columns %v, want %v", doc, heading, rows[0], header)
	}
	return rows[1:]
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

// spans returns the `code` spans of a cell.
func spans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// docValue reads a default cell: "empty ..." is "", else the code spans
// before any parenthesis, joined by ", " and without quotes.
func docValue(cell string) string {
	if strings.HasPrefix(cell, "empty") {
		return ""
	}
	value, _, _ := strings.Cut(cell, " (")
	return strings.ReplaceAll(strings.Join(spans(value), ", "), `"`, "")
}

// configKeys lists every key of a struct type, by dotted path, descending
// into sections but not into lists and maps.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[ByteSize]() {
			keys = append(keys, configKeys(f.Type, prefix+key+".")...)
			continue
		}
		keys = append(keys, prefix+key)
	}
	return keys
}

var inlineRange = regexp.MustCompile(`\d\.\.\d`)

// TestDocumentedDefaultsAndRanges: docs/configuration.md's key table
// lists every key, with the default Default has and the range the bounds
// table declares.
func TestDocumentedDefaultsAndRanges(t *testing.T) {
	documented := map[string]bool{}
	for _, row := range docTable(t, "../../docs/configuration.md", "## Keys", "key", "default", "range", "meaning") {
		keys, def, rng, meaning := spans(row[0]), row[1], row[2], row[3]
		if len(keys) == 0 {
			t.Errorf("row without a key: %v", row)
		}
		if inlineRange.MatchString(meaning) {
			t.Errorf("%v: a range in the meaning; it belongs in the range column", keys)
		}
		for _, key := range keys {
			documented[key] = true
			if key == "nodes" {
				got, want := spans(def), sortedKeys(DefaultNodes())
				sort.Strings(got)
				if !slices.Equal(got, want) {
					t.Errorf("nodes: documented default %v, Default %v", got, want)
				}
				continue
			}
			if !slices.Contains(configKeys(reflect.TypeFor[Config](), ""), key) {
				t.Errorf("%s is documented but not a key", key)
				continue
			}
			v := Default().lookup(key)
			if got, want := docValue(def), formatValue(v); got != want {
				t.Errorf("%s: documented default %q, Default %q", key, got, want)
			}
			want := ""
			for _, b := range bounds {
				if b.key == key {
					want = b.rangeText(v.Type())
				}
			}
			if rng != want {
				t.Errorf("%s: documented range %q, bounds %q", key, rng, want)
			}
		}
	}
	for _, key := range configKeys(reflect.TypeFor[Config](), "") {
		if !documented[key] {
			t.Errorf("%s is not in docs/configuration.md's key table", key)
		}
	}
}

// TestDocumentedNodeKeys: docs/configuration.md's node table says which
// executors take each key, and its default, as executorKinds does.
func TestDocumentedNodeKeys(t *testing.T) {
	all := kindNames(func(executorKind) bool { return true })
	documented := map[string]bool{}
	for _, row := range docTable(t, "../../docs/configuration.md", "## Nodes", "key", "applies to", "default", "meaning") {
		key, appliesTo, def, meaning := strings.Trim(row[0], "`"), row[1], row[2], row[3]
		documented[key] = true
		if slices.Contains(commonNodeKeys, key) {
			if appliesTo != "all" {
				t.Errorf("%s applies to all executors, documented %q", key, appliesTo)
			}
			switch key {
			case "executor":
				if got, want := spans(def), kindNames(func(k executorKind) bool { return k.builtin }); !slices.Equal(got, want) {
					t.Errorf("executor: documented built-ins %v, table %v", got, want)
				}
				if got := spans(meaning); !slices.Equal(got, all) {
					t.Errorf("executor: documented executors %v, table %v", got, all)
				}
			case "timeout":
				if got, want := spans(def), kindNames(func(k executorKind) bool { return k.timeoutRequired }); !slices.Equal(got, want) {
					t.Errorf("timeout: documented required for %v, table %v", got, want)
				}
			}
			continue
		}
		if _, ok := fieldByKey(reflect.TypeFor[Node](), key); !ok {
			t.Errorf("%s is documented but not a node key", key)
			continue
		}
		takers := kindNames(func(k executorKind) bool { return slices.Contains(k.keys, key) })
		if got := spans(appliesTo); !slices.Equal(got, takers) {
			t.Errorf("%s: documented for %v, taken by %v", key, got, takers)
		}
		for _, name := range takers {
			kind, _ := kindOf("n", Node{Executor: name})
			cfg := Default()
			cfg.Nodes = map[string]Node{"n": {Executor: name, Timeout: 1}}
			required := false
			for _, fe := range fieldErrors(t, cfg.Validate()) {
				required = required || (fe.Field == "nodes.n."+key && strings.HasPrefix(fe.Msg, "required"))
			}
			want := "" // no default: the documentation says what that means
			if v := kind.resolve(Node{}).lookup(key); isSet(v) {
				want = formatValue(v)
			}
			switch {
			case required && !strings.HasPrefix(def, "required"):
				t.Errorf("%s: required by %s, documented default %q", key, name, def)
			case !required && docValue(def) != want:
				t.Errorf("%s: %s's default %q, documented %q", key, name, want, def)
			}
		}
	}
	for _, key := range append(slices.Clone(commonNodeKeys), executorKeys()...) {
		if !documented[key] {
			t.Errorf("node key %s is not in docs/configuration.md's node table", key)
		}
	}
}

// lookup returns a Node field by key.
func (n Node) lookup(key string) reflect.Value {
	return reflect.ValueOf(n).FieldByIndex(nodeField(key).Index)
}

// TestExecutorsDocumented: docs/executors.md has a section for every executor.
func TestExecutorsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/executors.md")
	if err != nil {
		t.Fatal(err)
	}
	var headings []string
	for line := range strings.Lines(string(b)) {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			headings = append(headings, strings.Split(strings.TrimSpace(h), ", ")...)
		}
	}
	for _, name := range kindNames(func(executorKind) bool { return true }) {
		if !slices.Contains(headings, name) {
			t.Errorf("docs/executors.md has no section for executor %s (headings %v)", name, headings)
		}
	}
}
