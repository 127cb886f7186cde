package workflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"
)

// header is a valid template preamble; tests append [[steps]] to it.
const header = `
namespace = "linear_workflow"
name = "mathematical_sequence"
version = "1.0.0"
`

func step(name string, deps ...string) string {
	s := "\n[[steps]]\nname = \"" + name + "\"\nhandler = \"demo.math\"\n"
	if len(deps) > 0 {
		s += `depends_on = ["` + strings.Join(deps, `", "`) + "\"]\n"
	}
	return s
}

func TestParseTemplateDefaultsAndFields(t *testing.T) {
	src := header + `description = "four steps"` + step("a") + `
config = { op = "add", operand = 10, nested = { list = [1, 2] } }
timeout = "2m"

[steps.retry]
retryable = false
max_attempts = 7
backoff_base = "3s"
backoff_max = "90s"
` + step("b", "a")
	tpl, err := ParseTemplate("templates/linear.toml", []byte(src), nil)
	require.NoError(t, err)
	require.Equal(t, "linear_workflow", tpl.Namespace)
	require.Equal(t, "mathematical_sequence", tpl.Name)
	require.Equal(t, "1.0.0", tpl.Version)
	require.Equal(t, "four steps", tpl.Description)
	require.Equal(t, "templates/linear.toml", tpl.Source)
	require.Equal(t, "linear_workflow/mathematical_sequence@1.0.0", tpl.Key())
	sum := sha256.Sum256([]byte(src))
	require.Equal(t, hex.EncodeToString(sum[:]), tpl.Hash)

	a, ok := tpl.Step("a")
	require.True(t, ok)
	require.Equal(t, "demo.math", a.Handler)
	require.JSONEq(t, `{"op":"add","operand":10,"nested":{"list":[1,2]}}`, string(a.Config))
	require.Equal(t, 2*time.Minute, a.Timeout)
	require.Equal(t, RetryPolicy{Retryable: false, MaxAttempts: 7, BackoffBase: 3 * time.Second, BackoffMax: 90 * time.Second}, a.Retry)

	b, ok := tpl.Step("b")
	require.True(t, ok)
	require.JSONEq(t, `{}`, string(b.Config), "a missing config is an empty object")
	require.Equal(t, DefaultStepTimeout, b.Timeout)
	require.Equal(t, RetryPolicy{Retryable: true, MaxAttempts: DefaultMaxAttempts}, b.Retry)
	require.Equal(t, []string{"a"}, b.DependsOn)

	_, ok = tpl.Step("zz")
	require.False(t, ok)
}

func TestParseTemplateValidationErrors(t *testing.T) {
	const file = "templates/linear.toml"
	tests := []struct {
		name string
		src  string
		want []string // each problem, without the file prefix
	}{
		{
			name: "unknown dependency",
			src:  header + step("a") + step("b", "zz"),
			want: []string{`step "b": depends on unknown step "zz"`},
		},
		{
			name: "cycle",
			src:  header + step("a", "c") + step("b", "a") + step("c", "b"),
			want: []string{`cycle: a -> b -> c -> a`},
		},
		{
			name: "cycle printed from earliest declared step",
			src:  header + step("root") + step("x", "root", "z") + step("y", "x") + step("z", "y"),
			want: []string{`cycle: x -> y -> z -> x`},
		},
		{
			name: "two separate cycles",
			src:  header + step("a", "b") + step("b", "a") + step("c", "d") + step("d", "c"),
			want: []string{`cycle: a -> b -> a`, `cycle: c -> d -> c`},
		},
		{
			name: "self dependency",
			src:  header + step("a", "a"),
			want: []string{`step "a": depends on itself`},
		},
		{
			name: "dependency listed twice",
			src:  header + step("a") + step("b", "a", "a"),
			want: []string{`step "b": lists dependency "a" twice`},
		},
		{
			name: "duplicate step names",
			src:  header + step("a") + step("a"),
			want: []string{`step "a": duplicate step name`},
		},
		{
			name: "no steps",
			src:  header,
			want: []string{`no steps`},
		},
		{
			name: "bad step name",
			src:  header + step("Bad-Name"),
			want: []string{`step "Bad-Name": name must match [a-z][a-z0-9_]*`},
		},
		{
			name: "missing step name",
			src:  header + "[[steps]]\nhandler = \"demo.math\"\n",
			want: []string{`step #1: name is required`},
		},
		{
			name: "missing handler",
			src:  header + "[[steps]]\nname = \"a\"\n",
			want: []string{`step "a": handler is required`},
		},
		{
			name: "missing namespace name version",
			src:  step("a"),
			want: []string{`namespace is required`, `name is required`, `version is required`},
		},
		{
			name: "bad namespace",
			src:  strings.Replace(header, `"linear_workflow"`, `"Linear-Workflow"`, 1) + step("a"),
			want: []string{`namespace "Linear-Workflow" must match [a-z][a-z0-9_]* and be at most 40 characters`},
		},
		{
			name: "namespace too long",
			src:  strings.Replace(header, `"linear_workflow"`, `"`+strings.Repeat("n", 41)+`"`, 1) + step("a"),
			want: []string{`namespace "` + strings.Repeat("n", 41) + `" must match [a-z][a-z0-9_]* and be at most 40 characters`},
		},
		{
			name: "bad name",
			src:  strings.Replace(header, `"mathematical_sequence"`, `"9lives"`, 1) + step("a"),
			want: []string{`name "9lives" must match [a-z][a-z0-9_]* and be at most 64 characters`},
		},
		{
			name: "name too long",
			src:  strings.Replace(header, `"mathematical_sequence"`, `"`+strings.Repeat("m", 65)+`"`, 1) + step("a"),
			want: []string{`name "` + strings.Repeat("m", 65) + `" must match [a-z][a-z0-9_]* and be at most 64 characters`},
		},
		{
			name: "bad version",
			src:  strings.Replace(header, `"1.0.0"`, `"1.0"`, 1) + step("a"),
			want: []string{`version "1.0" must be a semantic version MAJOR.MINOR.PATCH with an optional -prerelease`},
		},
		{
			name: "version with leading zero",
			src:  strings.Replace(header, `"1.0.0"`, `"01.0.0"`, 1) + step("a"),
			want: []string{`version "01.0.0" must be a semantic version MAJOR.MINOR.PATCH with an optional -prerelease`},
		},
		{
			name: "unknown keys",
			src:  header + "owner = \"me\"\n" + step("a") + "retries = 3\n[steps.retry]\nmaxattempts = 2\n",
			want: []string{`unknown key "owner"`, `unknown key "steps.retries"`, `unknown key "steps.retry.maxattempts"`},
		},
		{
			// Matched regardless of case, two such keys would make the
			// parse depend on the decoder's map order.
			name: "keys not in lower case",
			src:  header + step("a") + "hAndler = \"other\"\n[steps.config]\nOp = 1\n",
			want: []string{`key "steps.hAndler" must be written in lower case`},
		},
		{
			name: "bad timeout",
			src:  header + step("a") + "timeout = \"soon\"\n",
			want: []string{`step "a": timeout "soon" is not a duration like "30s" or "5m"`},
		},
		{
			name: "non-positive timeout",
			src:  header + step("a") + "timeout = \"0s\"\n",
			want: []string{`step "a": timeout must be positive, got "0s"`},
		},
		{
			name: "max attempts out of range",
			src:  header + step("a") + "[steps.retry]\nmax_attempts = 0\n" + step("b") + "[steps.retry]\nmax_attempts = 101\n",
			want: []string{
				`step "a": retry.max_attempts must be between 1 and 100, got 0`,
				`step "b": retry.max_attempts must be between 1 and 100, got 101`,
			},
		},
		{
			name: "bad backoff durations",
			src:  header + step("a") + "[steps.retry]\nbackoff_base = \"1x\"\nbackoff_max = \"-1s\"\n",
			want: []string{
				`step "a": retry.backoff_base "1x" is not a duration like "30s" or "5m"`,
				`step "a": retry.backoff_max must be positive, got "-1s"`,
			},
		},
		{
			name: "backoff base above max",
			src:  header + step("a") + "[steps.retry]\nbackoff_base = \"2m\"\nbackoff_max = \"1m\"\n",
			want: []string{`step "a": retry.backoff_base 2m0s is greater than retry.backoff_max 1m0s`},
		},
		{
			name: "every problem is collected",
			src:  strings.Replace(header, `"1.0.0"`, `"v1"`, 1) + step("a", "a") + step("b", "zz") + step("b"),
			want: []string{
				`version "v1" must be a semantic version MAJOR.MINOR.PATCH with an optional -prerelease`,
				`step "a": depends on itself`,
				`step "b": duplicate step name`,
				`step "b": depends on unknown step "zz"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := ParseTemplate(file, []byte(tt.src), nil)
			require.Nil(t, tpl)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, file, ve.Source)
			require.Equal(t, tt.want, ve.Problems)
			lines := make([]string, len(tt.want))
			for i, w := range tt.want {
				lines[i] = file + ": " + w
			}
			require.EqualError(t, err, strings.Join(lines, "\n"))
		})
	}
}

func TestParseTemplateUnknownHandler(t *testing.T) {
	reg := NewRegistry()
	noop := HandlerFunc(func(context.Context, StepInput) (json.RawMessage, error) { return nil, nil })
	require.NoError(t, reg.Register("demo.math", noop))
	src := header + step("a") + "\n[[steps]]\nname = \"b\"\nhandler = \"demo.nope\"\n"

	_, err := ParseTemplate("t.toml", []byte(src), reg)
	require.EqualError(t, err, `t.toml: step "b": unknown handler "demo.nope"`)

	_, err = ParseTemplate("t.toml", []byte(src), nil)
	require.NoError(t, err, "a nil registry skips the handler check")
}

func TestParseTemplateSyntaxAndTypeErrors(t *testing.T) {
	_, err := ParseTemplate("t.toml", []byte("namespace = \n"), nil)
	require.ErrorContains(t, err, "t.toml: parsing TOML:")

	// An integer timeout would be nanoseconds; it is refused, not guessed.
	_, err = ParseTemplate("t.toml", []byte(header+step("a")+"timeout = 30\n"), nil)
	require.ErrorContains(t, err, "t.toml: parsing TOML:")
}

func TestParseTemplateVersions(t *testing.T) {
	for _, v := range []string{"0.0.1", "1.2.3", "10.20.30", "1.0.0-rc.1", "2.0.0-alpha-2.x"} {
		src := strings.Replace(header, `"1.0.0"`, `"`+v+`"`, 1) + step("a")
		_, err := ParseTemplate("t.toml", []byte(src), nil)
		require.NoError(t, err, v)
	}
	for _, v := range []string{"1", "1.0", "1.0.0.0", "v1.0.0", "1.0.0-", "1.0.0+build", "1.a.0"} {
		src := strings.Replace(header, `"1.0.0"`, `"`+v+`"`, 1) + step("a")
		_, err := ParseTemplate("t.toml", []byte(src), nil)
		require.Error(t, err, v)
	}
}

func TestTemplateGraph(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		order    []string
		roots    []string
		parents  map[string][]string
		children map[string][]string
	}{
		{
			name:  "linear",
			src:   header + step("a") + step("b", "a") + step("c", "b") + step("d", "c"),
			order: []string{"a", "b", "c", "d"},
			roots: []string{"a"},
		},
		{
			name:     "declared out of order",
			src:      header + step("d", "c") + step("c", "b") + step("b", "a") + step("a"),
			order:    []string{"a", "b", "c", "d"},
			roots:    []string{"a"},
			parents:  map[string][]string{"d": {"c"}, "a": nil},
			children: map[string][]string{"a": {"b"}, "d": nil},
		},
		{
			name:     "diamond ties broken by declaration order",
			src:      header + step("start") + step("c", "start") + step("b", "start") + step("end", "b", "c"),
			order:    []string{"start", "c", "b", "end"},
			roots:    []string{"start"},
			parents:  map[string][]string{"end": {"b", "c"}},
			children: map[string][]string{"start": {"c", "b"}},
		},
		{
			name:  "two roots interleave by declaration order",
			src:   header + step("x") + step("x2", "x") + step("y") + step("y2", "y") + step("join", "x2", "y2"),
			order: []string{"x", "x2", "y", "y2", "join"},
			roots: []string{"x", "y"},
		},
		{
			name:  "a later-declared step that becomes ready first waits its turn",
			src:   header + step("a") + step("slow", "mid") + step("mid", "a") + step("fast", "a"),
			order: []string{"a", "mid", "slow", "fast"},
			roots: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl, err := ParseTemplate("t.toml", []byte(tt.src), nil)
			require.NoError(t, err)
			require.Equal(t, tt.order, tpl.Order())
			require.Equal(t, tt.roots, tpl.Roots())
			for s, want := range tt.parents {
				require.Equal(t, want, tpl.Parents(s), "parents of %s", s)
			}
			for s, want := range tt.children {
				require.Equal(t, want, tpl.Children(s), "children of %s", s)
			}
		})
	}
	tpl, err := ParseTemplate("t.toml", []byte(header+step("a")), nil)
	require.NoError(t, err)
	require.Nil(t, tpl.Parents("unknown"))
	require.Nil(t, tpl.Children("unknown"))
}

func TestLoadDir(t *testing.T) {
	valid := header + step("a")
	fsys := fstest.MapFS{
		"a.toml":             {Data: []byte(valid)},
		"nested/deep/b.toml": {Data: []byte(strings.Replace(valid, `"1.0.0"`, `"2.0.0"`, 1))},
		"README.md":          {Data: []byte("not a template")},
		"nested/notes.txt":   {Data: []byte("ignored")},
	}
	tpls, err := LoadDir(fsys, nil)
	require.NoError(t, err)
	require.Len(t, tpls, 2)
	require.Equal(t, "a.toml", tpls[0].Source)
	require.Equal(t, "nested/deep/b.toml", tpls[1].Source)
	require.Equal(t, "2.0.0", tpls[1].Version)
}

func TestLoadDirDuplicateTemplate(t *testing.T) {
	valid := header + step("a")
	fsys := fstest.MapFS{
		"one.toml":     {Data: []byte(valid)},
		"sub/two.toml": {Data: []byte(valid + "# same key, different bytes\n")},
	}
	tpls, err := LoadDir(fsys, nil)
	require.Nil(t, tpls)
	require.EqualError(t, err, "sub/two.toml: template linear_workflow/mathematical_sequence@1.0.0 is already defined in one.toml")
}

func TestLoadDirCollectsEveryBadFile(t *testing.T) {
	fsys := fstest.MapFS{
		"bad1.toml": {Data: []byte(header + step("a", "zz"))},
		"bad2.toml": {Data: []byte(header)},
		"good.toml": {Data: []byte(strings.Replace(header, `"1.0.0"`, `"3.0.0"`, 1) + step("a"))},
	}
	_, err := LoadDir(fsys, nil)
	require.EqualError(t, err, "bad1.toml: step \"a\": depends on unknown step \"zz\"\nbad2.toml: no steps")
}

func TestLoadExampleTemplates(t *testing.T) {
	tpls, err := LoadDir(os.DirFS("../examples/templates"), nil)
	require.NoError(t, err)

	want := map[string]struct {
		order   []string
		parents map[string][]string
	}{
		"linear_workflow/mathematical_sequence@1.0.0": {
			order: []string{"linear_step_1", "linear_step_2", "linear_step_3", "linear_step_4"},
			parents: map[string][]string{
				"linear_step_1": nil, "linear_step_2": {"linear_step_1"},
				"linear_step_3": {"linear_step_2"}, "linear_step_4": {"linear_step_3"},
			},
		},
		"diamond_workflow/parallel_computation@1.0.0": {
			order: []string{"diamond_start", "diamond_branch_b", "diamond_branch_c", "diamond_end"},
			parents: map[string][]string{
				"diamond_start": nil, "diamond_branch_b": {"diamond_start"}, "diamond_branch_c": {"diamond_start"},
				"diamond_end": {"diamond_branch_b", "diamond_branch_c"},
			},
		},
		"tree_workflow/hierarchical_computation@1.0.0": {
			order: []string{
				"tree_root", "tree_branch_left", "tree_branch_right",
				"tree_leaf_d", "tree_leaf_e", "tree_leaf_f", "tree_leaf_g", "tree_final_convergence",
			},
			parents: map[string][]string{
				"tree_root": nil, "tree_branch_left": {"tree_root"}, "tree_branch_right": {"tree_root"},
				"tree_leaf_d": {"tree_branch_left"}, "tree_leaf_e": {"tree_branch_left"},
				"tree_leaf_f": {"tree_branch_right"}, "tree_leaf_g": {"tree_branch_right"},
				"tree_final_convergence": {"tree_leaf_d", "tree_leaf_e", "tree_leaf_f", "tree_leaf_g"},
			},
		},
		"mixed_dag_workflow/complex_dag_computation@1.0.0": {
			order: []string{
				"dag_init", "dag_process_left", "dag_process_right",
				"dag_validate", "dag_transform", "dag_analyze", "dag_finalize",
			},
			parents: map[string][]string{
				"dag_init": nil, "dag_process_left": {"dag_init"}, "dag_process_right": {"dag_init"},
				"dag_validate":  {"dag_process_left", "dag_process_right"},
				"dag_transform": {"dag_process_left"}, "dag_analyze": {"dag_process_right"},
				"dag_finalize": {"dag_validate", "dag_transform", "dag_analyze"},
			},
		},
		"fulfillment/process_order@1.0.0": {
			order: []string{"validate_order", "reserve_inventory", "process_payment", "ship_order"},
			parents: map[string][]string{
				"validate_order": nil, "reserve_inventory": {"validate_order"},
				"process_payment": {"validate_order", "reserve_inventory"}, "ship_order": {"process_payment"},
			},
		},
	}
	got := map[string]*Template{}
	for _, tpl := range tpls {
		got[tpl.Key()] = tpl
		require.Equal(t, tpl.Namespace, path.Dir(tpl.Source), "%s: namespace must match its folder", tpl.Source)
		require.Equal(t, tpl.Name+".toml", path.Base(tpl.Source), "%s: file named after the template", tpl.Source)
		require.NotEmpty(t, tpl.Description, tpl.Source)
	}
	require.Len(t, got, len(want))
	for key, w := range want {
		tpl, ok := got[key]
		require.True(t, ok, "missing %s", key)
		require.Equal(t, w.order, tpl.Order(), key)
		require.Len(t, tpl.Steps, len(w.parents), key)
		for s, parents := range w.parents {
			require.Equal(t, parents, tpl.Parents(s), "%s: parents of %s", key, s)
		}
	}

	// The math workflows configure demo.math; every op it needs is spelled
	// the same everywhere.
	ops := map[string]bool{"square": true, "add": true, "multiply": true, "divide": true, "average": true, "multiply_all": true}
	for _, tpl := range tpls {
		for _, s := range tpl.Steps {
			if s.Handler != "demo.math" {
				continue
			}
			var cfg struct {
				Op      string   `json:"op"`
				Operand *float64 `json:"operand"`
			}
			require.NoError(t, json.Unmarshal(s.Config, &cfg))
			require.True(t, ops[cfg.Op], "%s/%s: op %q", tpl.Key(), s.Name, cfg.Op)
			joins := len(s.DependsOn) > 1
			require.Equal(t, joins, cfg.Op == "average" || cfg.Op == "multiply_all", "%s/%s: join ops only on joins", tpl.Key(), s.Name)
			needsOperand := cfg.Op == "add" || cfg.Op == "multiply" || cfg.Op == "divide"
			require.Equal(t, needsOperand, cfg.Operand != nil, "%s/%s: operand", tpl.Key(), s.Name)
		}
	}
}
