package config

import (
	"os"
	"reflect"
	"regexp"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"
)

const examplePath = "../tasker.example.toml"

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	for _, env := range []string{EnvDevelopment, EnvTest, EnvProduction} {
		t.Run(env, func(t *testing.T) {
			t.Parallel()
			c, err := Load(LoadOptions{Path: examplePath, Env: env, Getenv: envOf(nil)})
			require.NoError(t, err)
			require.NoError(t, c.Validate())
			switch env {
			case EnvDevelopment:
				require.Equal(t, Default(env), c, "the example sets nothing outside its overlays")
			case EnvTest:
				require.Equal(t, ".tasker/pgdata-test", c.Database.DataDir)
				require.Equal(t, LogLevelWarn, c.Log.Level)
			case EnvProduction:
				require.Equal(t, 25, c.Database.MaxConns)
				require.Equal(t, LogFormatJSON, c.Log.Format)
				require.Equal(t, 0.5, c.CircuitBreakers.Default.FailureRatio)
				require.False(t, c.Templates.Bundled)
			}
		})
	}
}

// commentedSetting matches the example's commented-out keys and tables, which
// show the defaults: "# key = value" and "# [table]".
var commentedSetting = regexp.MustCompile(`(?m)^# (\[\[?[^\]]+\]\]?|[a-z_]+ = .+)$`)

// TestExampleDocumentsEveryKey uncomments every setting of the example and
// checks that the result sets every key of Config, to its default.
func TestExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	uncommented := commentedSetting.ReplaceAll(data, []byte("$1"))

	var raw map[string]any
	_, err = toml.Decode(string(uncommented), &raw)
	require.NoError(t, err)
	missing := missingKeys(reflect.TypeFor[Config](), nil, raw)
	require.Empty(t, missing, "keys of Config not documented in %s", examplePath)

	c, err := Parse(uncommented, EnvDevelopment, nil)
	require.NoError(t, err)
	require.Equal(t, map[string]Namespace{"payments": defaultNamespace()}, c.Namespaces,
		"the namespace example shows the defaults")
	require.Equal(t, c.CircuitBreakers.Default, c.Breaker(HTTPComponent("api.example.com")),
		"the component example shows the defaults")
	require.Len(t, c.Schedules, 1, "the schedule example is an entry")
	sc, err := c.Schedules[0].Workflow()
	require.NoError(t, err)
	require.Equal(t, "nightly_report", sc.Name)
	require.Equal(t, map[string]HandlerFlow{"http": {Rate: "100/s"}}, c.Flow.Handlers, "the handler example is an entry")
	c.Namespaces, c.CircuitBreakers.Components, c.Schedules = nil, nil, []Schedule{}
	c.Flow.Handlers = map[string]HandlerFlow{}
	require.Equal(t, Default(EnvDevelopment), c, "the commented values are the defaults")
}

// missingKeys walks the TOML names of t and returns those absent from raw. A
// map must have at least one entry, and each entry is walked.
func missingKeys(t reflect.Type, prefix toml.Key, raw map[string]any) []string {
	var missing []string
	for i := range t.NumField() {
		name := tomlName(t.Field(i))
		if name == "" {
			continue
		}
		key := append(prefix[:len(prefix):len(prefix)], name)
		v, ok := raw[name]
		if !ok {
			missing = append(missing, key.String())
			continue
		}
		ft := t.Field(i).Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.Struct:
			missing = append(missing, missingKeys(ft, key, v.(map[string]any))...)
		case reflect.Map:
			entries := v.(map[string]any)
			if len(entries) == 0 {
				missing = append(missing, key.String()+".<name>")
			}
			for name, entry := range entries {
				missing = append(missing, missingKeys(ft.Elem(), append(key, name), entry.(map[string]any))...)
			}
		}
	}
	return missing
}
