package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"testing/fstest"
	"time"

	"github.com/tasker-run/tasker/workflow"
	"github.com/tasker-run/tasker/workflow/handlers"
)

// Namespace is the namespace of the bench templates. It is Tasker's own:
// the bench reports only the tasks it created, by request id, so earlier
// runs left in the namespace do not disturb it.
const Namespace = "bench"

// Patterns the bench can run.
const (
	PatternLinear  = "linear"
	PatternDiamond = "diamond"
	PatternMixed   = "mixed"
)

// HandlerName is the bench handler, used instead of noop when a handler
// duration or a failure rate is asked for.
const HandlerName = "bench.work"

// KindInjected is the error kind of the failures the bench handler injects.
const KindInjected = "bench_injected"

// benchStep is one step of a pattern: its name and its parents.
type benchStep struct {
	name      string
	dependsOn []string
}

// patterns are the DAGs of the bench templates, the shapes of the reference
// workflows: linear a → b → c → d; diamond a → {b, c} → d; mixed DAG
// init → {left, right}; {left, right} → validate; left → transform;
// right → analyze; {validate, transform, analyze} → finalize.
var patterns = map[string][]benchStep{
	PatternLinear: {
		{name: "a"}, {name: "b", dependsOn: []string{"a"}},
		{name: "c", dependsOn: []string{"b"}}, {name: "d", dependsOn: []string{"c"}},
	},
	PatternDiamond: {
		{name: "a"}, {name: "b", dependsOn: []string{"a"}},
		{name: "c", dependsOn: []string{"a"}}, {name: "d", dependsOn: []string{"b", "c"}},
	},
	PatternMixed: {
		{name: "init"},
		{name: "left", dependsOn: []string{"init"}},
		{name: "right", dependsOn: []string{"init"}},
		{name: "validate", dependsOn: []string{"left", "right"}},
		{name: "transform", dependsOn: []string{"left"}},
		{name: "analyze", dependsOn: []string{"right"}},
		{name: "finalize", dependsOn: []string{"validate", "transform", "analyze"}},
	},
}

// StepsPerTask is the number of steps of a pattern's task.
func StepsPerTask(pattern string) int { return len(patterns[pattern]) }

// Retry settings of every bench step: enough attempts that an injected
// failure rate below one half practically never exhausts them, and a short
// backoff so retries measure the machinery, not the wait.
const (
	benchMaxAttempts = 20
	benchBackoffBase = "5ms"
	benchBackoffMax  = "50ms"
)

// Templates returns the bench templates (one per pattern, in namespace
// Namespace) as a file system for bootstrap.Options.Templates. Every step
// runs handler.
func Templates(handler string) fs.FS {
	fsys := fstest.MapFS{}
	for name, steps := range patterns {
		var b strings.Builder
		fmt.Fprintf(&b, "namespace = %q\nname = %q\nversion = \"1.0.0\"\n", Namespace, name)
		fmt.Fprintf(&b, "description = \"tasker bench: %s pattern\"\n", name)
		for _, st := range steps {
			fmt.Fprintf(&b, "\n[[steps]]\nname = %q\nhandler = %q\n", st.name, handler)
			if len(st.dependsOn) > 0 {
				quoted := make([]string, len(st.dependsOn))
				for i, d := range st.dependsOn {
					quoted[i] = fmt.Sprintf("%q", d)
				}
				fmt.Fprintf(&b, "depends_on = [%s]\n", strings.Join(quoted, ", "))
			}
			fmt.Fprintf(&b, "[steps.retry]\nretryable = true\nmax_attempts = %d\nbackoff_base = %q\nbackoff_max = %q\n",
				benchMaxAttempts, benchBackoffBase, benchBackoffMax)
		}
		fsys[name+".toml"] = &fstest.MapFile{Data: []byte(b.String())}
	}
	return fsys
}

// Handler returns the bench handler: it waits d (when positive), then fails
// with a retryable error with probability failureRate, else succeeds with
// {}.
func Handler(d time.Duration, failureRate float64) workflow.Handler {
	return workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("bench handler waiting %s: %w", d, ctx.Err())
			case <-t.C:
			}
		}
		if failureRate > 0 && rand.Float64() < failureRate {
			return nil, workflow.Retryable(KindInjected, 0, "injected failure (failure rate %g)", failureRate)
		}
		return json.RawMessage(`{}`), nil
	})
}

// handlerFor picks the handler the templates name: noop when the handler
// does nothing, the bench handler otherwise.
func handlerFor(o Options) string {
	if o.HandlerDuration > 0 || o.FailureRate > 0 {
		return HandlerName
	}
	return handlers.NameNoop
}
