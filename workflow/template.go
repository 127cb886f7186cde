package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Template defaults and limits.
const (
	// DefaultStepTimeout applies when a step has no timeout.
	DefaultStepTimeout = 30 * time.Second
	// DefaultMaxAttempts applies when a step's retry table has no
	// max_attempts. It counts the first attempt.
	DefaultMaxAttempts = 3
	// MaxMaxAttempts is the largest max_attempts a template may ask for.
	MaxMaxAttempts = 100
)

// Template is a named task: a DAG of steps loaded from a TOML file.
type Template struct {
	Namespace   string
	Name        string
	Version     string
	Description string
	Steps       []StepTemplate
	// Source is the file the template was read from.
	Source string
	// Hash is the hex SHA-256 of the file's bytes.
	Hash string
}

// StepTemplate is one step of a template.
type StepTemplate struct {
	Name    string
	Handler string
	// Config is the step's config table as a JSON object ({} when absent).
	Config    json.RawMessage
	DependsOn []string
	Timeout   time.Duration
	Retry     RetryPolicy
	// Flow is the step's flow control: its own concurrency, and the
	// concurrency key it or its template declares.
	Flow StepFlow
}

// RetryPolicy is a step's retry settings.
type RetryPolicy struct {
	// Retryable false makes every failure permanent. Defaults to true.
	Retryable bool
	// MaxAttempts counts the first attempt. Defaults to 3.
	MaxAttempts int
	// BackoffBase and BackoffMax override the node's backoff policy when
	// non-zero.
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// ValidationError lists every problem found in one template file.
type ValidationError struct {
	Source   string
	Problems []string
}

// Error returns one "source: problem" line per problem.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = e.Source + ": " + p
	}
	return strings.Join(lines, "\n")
}

// The TOML shapes. Optional scalars are pointers so a missing key can be
// told apart from an explicit zero. Durations are strings: TOML integers
// decoded into a time.Duration would silently mean nanoseconds.
type fileTemplate struct {
	Namespace   string `toml:"namespace"`
	Name        string `toml:"name"`
	Version     string `toml:"version"`
	Description string `toml:"description"`
	fileKey
	Steps []fileStep `toml:"steps"`
}

// fileKey is a concurrency key as a template or a step declares it.
type fileKey struct {
	ConcurrencyKey string  `toml:"concurrency_key"`
	MaxPerKey      *int    `toml:"max_per_key"`
	RatePerKey     *string `toml:"rate_per_key"`
	BurstPerKey    *int    `toml:"burst_per_key"`
}

type fileStep struct {
	Name      string         `toml:"name"`
	Handler   string         `toml:"handler"`
	Config    map[string]any `toml:"config"`
	DependsOn []string       `toml:"depends_on"`
	Timeout   *string        `toml:"timeout"`
	Retry     fileRetry      `toml:"retry"`
	// Concurrency bounds this step's runs in flight across tasks.
	Concurrency *int `toml:"concurrency"`
	fileKey
}

type fileRetry struct {
	Retryable   *bool   `toml:"retryable"`
	MaxAttempts *int    `toml:"max_attempts"`
	BackoffBase *string `toml:"backoff_base"`
	BackoffMax  *string `toml:"backoff_max"`
}

// ParseTemplate parses and validates one template file. source names the
// file in errors and becomes Template.Source. Handler names are checked
// against reg; a nil reg skips that check (for tools that validate
// templates without the handlers linked in). Every problem found is
// reported in one *ValidationError.
func ParseTemplate(source string, data []byte, reg *Registry) (*Template, error) {
	var ft fileTemplate
	md, err := toml.Decode(string(data), &ft)
	if err != nil {
		return nil, fmt.Errorf("%s: parsing TOML: %w", source, err)
	}
	sum := sha256.Sum256(data)
	t := &Template{
		Namespace:   ft.Namespace,
		Name:        ft.Name,
		Version:     ft.Version,
		Description: ft.Description,
		Source:      source,
		Hash:        hex.EncodeToString(sum[:]),
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, k := range md.Undecoded() {
		// The decoder reports keys nested below the first level of a
		// map[string]any as undecoded; config is free-form, so skip them.
		if len(k) > 2 && k[0] == "steps" && k[1] == "config" {
			continue
		}
		add("unknown key %q", k.String())
	}
	// The decoder matches keys to fields regardless of case, and of two keys
	// that differ only in case one would win at random: every key is
	// written as its field is named (config's own keys aside).
	for _, k := range md.Keys() {
		for i, part := range k {
			if i >= 2 && k[0] == "steps" && k[1] == "config" {
				break
			}
			if part != strings.ToLower(part) {
				add("key %q must be written in lower case", k.String())
				break
			}
		}
	}
	switch {
	case t.Namespace == "":
		add("namespace is required")
	case !ValidNamespace(t.Namespace):
		add("namespace %q must match [a-z][a-z0-9_]* and be at most %d characters", t.Namespace, MaxNamespaceLen)
	}
	switch {
	case t.Name == "":
		add("name is required")
	case !ValidName(t.Name):
		add("name %q must match [a-z][a-z0-9_]* and be at most %d characters", t.Name, MaxNameLen)
	}
	switch {
	case t.Version == "":
		add("version is required")
	case !ValidVersion(t.Version):
		add("version %q must be a semantic version MAJOR.MINOR.PATCH with an optional -prerelease", t.Version)
	}
	if len(ft.Steps) == 0 {
		add("no steps")
	}
	taskKey, keyProblems := ft.build(t.Namespace + "/" + t.Name)
	for _, p := range keyProblems {
		add("%s", p)
	}

	seen := make(map[string]bool, len(ft.Steps))
	for i, raw := range ft.Steps {
		st, stepProblems := buildStep(raw, reg)
		label := fmt.Sprintf("step %q", raw.Name)
		switch {
		case raw.Name == "":
			label = fmt.Sprintf("step #%d", i+1)
			add("%s: name is required", label)
		case !identRe.MatchString(raw.Name):
			add("%s: name must match [a-z][a-z0-9_]*", label)
		case seen[raw.Name]:
			add("%s: duplicate step name", label)
		}
		seen[raw.Name] = true
		// A step inherits its template's key unless it declares one of its
		// own, which then counts its own groups.
		switch {
		case st.Flow.Key != "":
			st.Flow.KeyScope = t.Namespace + "/" + t.Name + "/" + st.Name
		case raw.MaxPerKey == nil && raw.RatePerKey == nil && raw.BurstPerKey == nil:
			st.Flow.Key, st.Flow.KeyScope, st.Flow.KeyLimit = taskKey.Key, taskKey.KeyScope, taskKey.KeyLimit
		}
		for _, p := range stepProblems {
			add("%s: %s", label, p)
		}
		t.Steps = append(t.Steps, st)
	}
	// Dependencies are checked once every name is known, so a step may
	// depend on one declared after it.
	for _, s := range t.Steps {
		for _, d := range s.DependsOn {
			if !seen[d] {
				add("step %q: depends on unknown step %q", s.Name, d)
			}
		}
	}
	for _, c := range t.cycles() {
		add("cycle: %s", strings.Join(c, " -> "))
	}

	if len(problems) > 0 {
		return nil, &ValidationError{Source: source, Problems: problems}
	}
	return t, nil
}

// buildStep converts one [[steps]] entry, applying defaults, and returns the
// problems found in it (without the step label).
func buildStep(raw fileStep, reg *Registry) (StepTemplate, []string) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	st := StepTemplate{
		Name:    raw.Name,
		Handler: raw.Handler,
		Config:  json.RawMessage(`{}`),
		Timeout: DefaultStepTimeout,
		Retry:   RetryPolicy{Retryable: true, MaxAttempts: DefaultMaxAttempts},
	}
	switch {
	case raw.Handler == "":
		add("handler is required")
	case reg != nil:
		if _, ok := reg.Lookup(raw.Handler); !ok {
			add("unknown handler %q", raw.Handler)
		}
	}
	if raw.Config != nil {
		cfg, err := json.Marshal(raw.Config)
		if err != nil {
			add("config cannot be represented as JSON: %v", err)
		} else {
			st.Config = cfg
		}
	}
	deps := make(map[string]bool, len(raw.DependsOn))
	for _, d := range raw.DependsOn {
		switch {
		case d == raw.Name:
			add("depends on itself")
		case deps[d]:
			add("lists dependency %q twice", d)
		default:
			deps[d] = true
			st.DependsOn = append(st.DependsOn, d)
		}
	}
	parse := func(key string, v *string, dst *time.Duration) {
		if v == nil {
			return
		}
		d, err := time.ParseDuration(*v)
		switch {
		case err != nil:
			add("%s %q is not a duration like \"30s\" or \"5m\"", key, *v)
		case d <= 0:
			add("%s must be positive, got %q", key, *v)
		default:
			*dst = d
		}
	}
	parse("timeout", raw.Timeout, &st.Timeout)
	parse("retry.backoff_base", raw.Retry.BackoffBase, &st.Retry.BackoffBase)
	parse("retry.backoff_max", raw.Retry.BackoffMax, &st.Retry.BackoffMax)
	if b, m := st.Retry.BackoffBase, st.Retry.BackoffMax; b > 0 && m > 0 && b > m {
		add("retry.backoff_base %s is greater than retry.backoff_max %s", b, m)
	}
	if raw.Retry.Retryable != nil {
		st.Retry.Retryable = *raw.Retry.Retryable
	}
	if n := raw.Retry.MaxAttempts; n != nil {
		if *n < 1 || *n > MaxMaxAttempts {
			add("retry.max_attempts must be between 1 and %d, got %d", MaxMaxAttempts, *n)
		} else {
			st.Retry.MaxAttempts = *n
		}
	}
	if n := raw.Concurrency; n != nil {
		if *n < 1 {
			add("concurrency must be at least 1, got %d", *n)
		} else {
			st.Flow.Concurrency = *n
		}
	}
	// A step's own key replaces its template's; the scope is filled in by
	// the caller, which knows the template.
	key, keyProblems := raw.build("")
	st.Flow.Key, st.Flow.KeyLimit = key.Key, key.KeyLimit
	problems = append(problems, keyProblems...)
	return st, problems
}

// build checks a declared key: a key needs a limit, and a limit a key.
func (k fileKey) build(scope string) (StepFlow, []string) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	f := StepFlow{Key: k.ConcurrencyKey, KeyScope: scope}
	if n := k.MaxPerKey; n != nil {
		if *n < 1 {
			add("max_per_key must be at least 1, got %d", *n)
		} else {
			f.KeyLimit.MaxInFlight = *n
		}
	}
	if r := k.RatePerKey; r != nil {
		rate, err := ParseRate(*r)
		if err != nil {
			add("rate_per_key: %v", err)
		}
		f.KeyLimit.Rate = rate
	}
	if b := k.BurstPerKey; b != nil {
		switch {
		case *b < 1:
			add("burst_per_key must be at least 1, got %d", *b)
		case k.RatePerKey == nil:
			add("burst_per_key needs rate_per_key")
		default:
			f.KeyLimit.Burst = *b
		}
	}
	switch {
	case f.Key == "" && (k.MaxPerKey != nil || k.RatePerKey != nil):
		add("max_per_key and rate_per_key need a concurrency_key")
	case f.Key != "" && k.MaxPerKey == nil && k.RatePerKey == nil:
		add("concurrency_key %q needs max_per_key or rate_per_key", f.Key)
	case f.Key != "" && !strings.Contains(f.Key, "{{context"):
		add("concurrency_key %q has no {{context...}} placeholder: every task would share one key", f.Key)
	case strings.Contains(f.Key, "{{parents"):
		add("concurrency_key %q: only {{context...}} placeholders (the key is rendered when the task is created)", f.Key)
	}
	return f, problems
}

// LoadDir parses every *.toml file under fsys, recursively, in lexical
// order. It reports every invalid file and every (namespace, name, version)
// defined by more than one file, and returns no templates if there is any
// problem.
func LoadDir(fsys fs.FS, reg *Registry) ([]*Template, error) {
	var (
		templates []*Template
		errs      []error
		byKey     = map[string]string{} // "namespace/name@version" -> source
	)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", p, err)
		}
		if d.IsDir() || path.Ext(p) != ".toml" {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", p, err))
			return nil
		}
		t, err := ParseTemplate(p, data, reg)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		key := t.Key()
		if first, dup := byKey[key]; dup {
			errs = append(errs, fmt.Errorf("%s: template %s is already defined in %s", p, key, first))
			return nil
		}
		byKey[key] = p
		templates = append(templates, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading templates: %w", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return templates, nil
}

// Key identifies the template: "namespace/name@version".
func (t *Template) Key() string {
	return t.Namespace + "/" + t.Name + "@" + t.Version
}

// Step returns the step called name.
func (t *Template) Step(name string) (StepTemplate, bool) {
	i := t.index(name)
	if i < 0 {
		return StepTemplate{}, false
	}
	return t.Steps[i], true
}

// Parents returns the steps name depends on, in declaration order of its
// depends_on list, or nil for an unknown step.
func (t *Template) Parents(name string) []string {
	i := t.index(name)
	if i < 0 {
		return nil
	}
	return slices.Clone(t.Steps[i].DependsOn)
}

// Children returns the steps that depend on name, in declaration order.
func (t *Template) Children(name string) []string {
	var out []string
	for _, s := range t.Steps {
		if slices.Contains(s.DependsOn, name) {
			out = append(out, s.Name)
		}
	}
	return out
}

// Roots returns the steps without dependencies, in declaration order.
func (t *Template) Roots() []string {
	var out []string
	for _, s := range t.Steps {
		if len(s.DependsOn) == 0 {
			out = append(out, s.Name)
		}
	}
	return out
}

// Order returns every step in a deterministic topological order (Kahn's
// algorithm; among the steps ready at the same time, the one declared first
// goes first). A template that passed validation has no cycle; if one is
// present anyway, the steps on it and after it are left out.
func (t *Template) Order() []string {
	n := len(t.Steps)
	indegree := make([]int, n)
	children := make([][]int, n)
	for i, s := range t.Steps {
		for _, d := range s.DependsOn {
			if j := t.index(d); j >= 0 {
				indegree[i]++
				children[j] = append(children[j], i)
			}
		}
	}
	var ready []int // kept sorted by declaration index
	for i := range n {
		if indegree[i] == 0 {
			ready = append(ready, i)
		}
	}
	order := make([]string, 0, n)
	for len(ready) > 0 {
		i := ready[0]
		ready = ready[1:]
		order = append(order, t.Steps[i].Name)
		for _, c := range children[i] {
			if indegree[c]--; indegree[c] == 0 {
				pos, _ := slices.BinarySearch(ready, c)
				ready = slices.Insert(ready, pos, c)
			}
		}
	}
	return order
}

// index returns the position of the step called name, or -1.
func (t *Template) index(name string) int {
	return slices.IndexFunc(t.Steps, func(s StepTemplate) bool { return s.Name == name })
}

// cycles returns the cycles of the dependency graph, each as a path in run
// order (a -> b means b depends on a) that starts and ends at the earliest
// declared step on it. Unknown and self dependencies are reported elsewhere
// and ignored here.
func (t *Template) cycles() [][]string {
	const (
		white = iota
		grey
		black
	)
	n := len(t.Steps)
	children := make([][]int, n)
	for i, s := range t.Steps {
		for _, d := range s.DependsOn {
			if j := t.index(d); j >= 0 && j != i {
				children[j] = append(children[j], i)
			}
		}
	}
	color := make([]int, n)
	var (
		stack []int
		found [][]string
		seen  = map[string]bool{}
		visit func(int)
	)
	visit = func(i int) {
		color[i] = grey
		stack = append(stack, i)
		for _, c := range children[i] {
			switch color[c] {
			case white:
				visit(c)
			case grey:
				// Back edge i -> c closes the cycle stack[pos(c):].
				cyc := slices.Clone(stack[slices.Index(stack, c):])
				start := slices.Index(cyc, slices.Min(cyc))
				cyc = append(cyc[start:], cyc[:start]...)
				names := make([]string, 0, len(cyc)+1)
				for _, k := range cyc {
					names = append(names, t.Steps[k].Name)
				}
				names = append(names, names[0])
				if key := strings.Join(names, " "); !seen[key] {
					seen[key] = true
					found = append(found, names)
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
	}
	for i := range n {
		if color[i] == white {
			visit(i)
		}
	}
	return found
}
