package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// commentLine matches a comment line or a blank line of a template file.
var commentLine = regexp.MustCompile(`(?m)^(#.*)?\n`)

// FuzzTemplateParse feeds arbitrary TOML to ParseTemplate, which every
// template file goes through. It must never panic and must answer an error
// or a valid template; a valid template parses the same again, plans
// (PlanTask) without error, and its layers (Layers) and order (Order) place
// every step once, after each step it depends on.
func FuzzTemplateParse(f *testing.F) {
	err := filepath.WalkDir("../examples/templates", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".toml" {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// Without comments: small seeds keep the minimizing of new inputs short.
		f.Add(commentLine.ReplaceAll(data, nil))
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		header + step("a") + step("b", "a") + step("c", "a") + step("d", "c", "b"),
		header + step("late", "early") + step("early"),
		header + step("a", "b") + step("b", "a") + step("c"),
		header + step("a", "a"),
		header + step("a", "ghost", "ghost"),
		header + step("a") + step("a"),
		header + `[[steps]]
name = "a"
handler = "demo.math"
timeout = "1m30s"
config = { op = "add", operand = 2.5, nested = { list = [1, "two", { three = 3 }], when = 1979-05-27T07:32:00Z } }
[steps.retry]
retryable = false
max_attempts = 100
backoff_base = "10ms"
backoff_max = "1h"
`,
		header + "[[steps]]\nname = \"a\"\nhandler = \"h\"\ntimeout = \"0s\"\n[steps.retry]\nmax_attempts = 0\nbackoff_base = \"2s\"\nbackoff_max = \"1s\"\n",
		header + "[[steps]]\nname = \"a\"\nhandler = \"h\"\ntimeout = 30\nextra = 1\n",
		"namespace = \"Bad\"\nname = \"x-y\"\nversion = \"1.0\"\n",
		"",
		"[[steps]]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := ParseTemplate("fuzz.toml", data, nil)
		if err != nil {
			if tmpl != nil {
				t.Fatalf("ParseTemplate returned a template with error %v", err)
			}
			var verr *ValidationError
			if errors.As(err, &verr) && len(verr.Problems) == 0 {
				t.Fatalf("validation error without problems")
			}
			if !strings.HasPrefix(err.Error(), "fuzz.toml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		checkTemplate(t, tmpl, data)
	})
}

func checkTemplate(t *testing.T, tmpl *Template, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	if tmpl.Hash != hex.EncodeToString(sum[:]) || tmpl.Source != "fuzz.toml" {
		t.Fatalf("hash %s or source %q is not the file's", tmpl.Hash, tmpl.Source)
	}
	if !ValidNamespace(tmpl.Namespace) || !ValidName(tmpl.Name) || !ValidVersion(tmpl.Version) {
		t.Fatalf("invalid identity %s", tmpl.Key())
	}
	again, err := ParseTemplate("fuzz.toml", data, nil)
	if err != nil || !reflect.DeepEqual(again, tmpl) {
		t.Fatalf("parsing again gave %+v, %v", again, err)
	}
	n := len(tmpl.Steps)
	if n == 0 {
		t.Fatalf("a valid template without steps")
	}
	index := make(map[string]int, n)
	names := make([]string, n)
	deps := make([][]string, n)
	for i, s := range tmpl.Steps {
		if _, dup := index[s.Name]; dup {
			t.Fatalf("duplicate step %q", s.Name)
		}
		index[s.Name], names[i], deps[i] = i, s.Name, s.DependsOn
		var cfg map[string]any
		if err := json.Unmarshal(s.Config, &cfg); err != nil || cfg == nil {
			t.Fatalf("step %s: config %s is not a JSON object: %v", s.Name, s.Config, err)
		}
		if s.Timeout <= 0 || s.Retry.MaxAttempts < 1 || s.Retry.MaxAttempts > MaxMaxAttempts ||
			s.Retry.BackoffBase < 0 || s.Retry.BackoffMax < 0 {
			t.Fatalf("step %s: timeout or retry out of range: %+v", s.Name, s)
		}
	}

	// The plan: one identity per step, one edge per dependency, the roots
	// enqueued.
	var next uint64
	newID := func() (uuid.UUID, error) {
		next++
		var id uuid.UUID
		for i := range 8 {
			id[15-i] = byte(next >> (8 * i))
		}
		return id, nil
	}
	plan, err := PlanTask(tmpl.Steps, newID)
	if err != nil {
		t.Fatalf("a valid template does not plan: %v", err)
	}
	if len(plan.Steps) != n {
		t.Fatalf("plan has %d steps, template %d", len(plan.Steps), n)
	}
	ids := map[uuid.UUID]bool{plan.Task: true}
	wantEdges := 0
	for i, ps := range plan.Steps {
		if ids[ps.ID] {
			t.Fatalf("step %s reuses identity %s", ps.Name, ps.ID)
		}
		ids[ps.ID] = true
		if ps.Name != names[i] {
			t.Fatalf("plan step %d is %s, template's is %s", i, ps.Name, names[i])
		}
		if want := map[bool]StepState{true: StepStateEnqueued, false: StepStatePending}[ps.Root()]; ps.State != want {
			t.Fatalf("step %s starts %s, want %s", ps.Name, ps.State, want)
		}
		wantEdges += len(ps.DependsOn)
	}
	if len(plan.Edges) != wantEdges {
		t.Fatalf("%d edges for %d dependencies", len(plan.Edges), wantEdges)
	}
	for _, e := range plan.Edges {
		if !slices.Contains(tmpl.Steps[e.To].DependsOn, names[e.From]) {
			t.Fatalf("edge %s -> %s is no dependency", names[e.From], names[e.To])
		}
	}

	// Layers: a root is 0, any other step one more than its deepest parent,
	// so every parent is drawn above its children and no layer is empty.
	layers := Layers(names, deps)
	if len(layers) != n {
		t.Fatalf("%d layers for %d steps", len(layers), n)
	}
	used := make([]bool, n)
	for i, s := range tmpl.Steps {
		want := 0
		for _, d := range s.DependsOn {
			want = max(want, layers[index[d]]+1)
		}
		if layers[i] != want {
			t.Fatalf("step %s in layer %d, want %d (layers %v)", s.Name, layers[i], want, layers)
		}
		used[layers[i]] = true
	}
	if last := slices.Max(layers); slices.Contains(used[:last+1], false) {
		t.Fatalf("an empty layer below %d: %v", last, layers)
	}

	// Order: every step once, each after what it depends on.
	order := tmpl.Order()
	if len(order) != n {
		t.Fatalf("order %v leaves steps out of %v", order, names)
	}
	pos := make(map[string]int, n)
	for i, name := range order {
		if _, dup := pos[name]; dup {
			t.Fatalf("order %v lists %s twice", order, name)
		}
		pos[name] = i
	}
	for _, s := range tmpl.Steps {
		for _, d := range s.DependsOn {
			if pos[d] >= pos[s.Name] {
				t.Fatalf("order %v puts %s before its parent %s", order, s.Name, d)
			}
		}
	}
}
