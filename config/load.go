package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// LoadOptions says where [Load] reads from.
type LoadOptions struct {
	// Path is the TOML file to read; empty means no file (built-in defaults and
	// environment variables only).
	Path string
	// Env picks the environment; empty means TASKER_ENV, and "development"
	// when that is unset too.
	Env string
	// Getenv reads environment variables; nil means os.Getenv. Tests pass a
	// map lookup instead of changing the process environment.
	Getenv func(string) string
}

// Load reads the file at opts.Path (if any) and builds the configuration of
// the chosen environment as [Parse] does. The result is valid.
func Load(opts LoadOptions) (*Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	env := cmp.Or(opts.Env, getenv("TASKER_ENV"), EnvDevelopment)
	var data []byte
	if opts.Path != "" {
		var err error
		if data, err = os.ReadFile(opts.Path); err != nil {
			return nil, fmt.Errorf("reading config: %w", err)
		}
	}
	cfg, err := Parse(data, env, getenv)
	if err != nil {
		if opts.Path != "" {
			return nil, fmt.Errorf("loading %s: %w", opts.Path, err)
		}
		return nil, err
	}
	return cfg, nil
}

// envOverrides are the environment variables that override the file, applied
// last. An empty value leaves the key alone.
var envOverrides = []struct {
	name, key string
	set       func(c *Config, v string)
}{
	{"TASKER_DATABASE_URL", "database.url", func(c *Config, v string) { c.Database.URL = v }},
	{"TASKER_HTTP_LISTEN", "http.listen", func(c *Config, v string) { c.HTTP.Listen = v }},
	{"TASKER_API_TOKEN", "http.api_token", func(c *Config, v string) { c.HTTP.APIToken = v }},
	{"TASKER_LOG_LEVEL", "log.level", func(c *Config, v string) { c.Log.Level = strings.ToLower(v) }},
	{"TASKER_LOG_FORMAT", "log.format", func(c *Config, v string) { c.Log.Format = strings.ToLower(v) }},
	{"TASKER_NODE_ID", "node.id", func(c *Config, v string) { c.Node.ID = v }},
	{"TASKER_NODE_MODE", "node.mode", func(c *Config, v string) { c.Node.Mode = strings.ToLower(v) }},
}

// document is the shape of a configuration file: the root tables plus the
// per-environment overlays, decoded later so each can be checked and only the
// chosen one applied.
type document struct {
	Config
	Environments map[string]toml.Primitive `toml:"environments"`
}

// Parse builds the configuration of env from TOML data: the built-in defaults
// of env, then the file's root tables, then its [environments.<env>] overlay,
// then these environment variables read through getenv (nil means none):
// TASKER_DATABASE_URL (database.url), TASKER_HTTP_LISTEN (http.listen),
// TASKER_API_TOKEN (http.api_token), TASKER_LOG_LEVEL (log.level),
// TASKER_LOG_FORMAT (log.format), TASKER_NODE_ID (node.id) and
// TASKER_NODE_MODE (node.mode).
//
// Every overlay is decoded and checked, not only the chosen one. Unknown keys
// anywhere, an environment that is neither built in nor has an overlay, and
// every validation problem are reported together in one *[ValidationError].
// The result is valid.
func Parse(data []byte, env string, getenv func(string) string) (*Config, error) {
	env = cmp.Or(env, EnvDevelopment)
	var doc document
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		return nil, decodeError(err)
	}

	cfg := Default(env)
	var problems []string
	overlay(&md, nil, reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&doc.Config).Elem())
	for _, name := range slices.Sorted(maps.Keys(doc.Environments)) {
		var layer Config
		if err := md.PrimitiveDecode(doc.Environments[name], &layer); err != nil {
			problems = append(problems, decodeError(err).Error())
			continue
		}
		if name == env {
			overlay(&md, toml.Key{"environments", name}, reflect.ValueOf(cfg).Elem(), reflect.ValueOf(&layer).Elem())
		}
	}
	problems = append(problems, unknownKeys(&md)...)
	if _, ok := doc.Environments[env]; !ok && env != EnvDevelopment && env != EnvTest && env != EnvProduction {
		problems = append(problems, fmt.Sprintf(
			"environment %q (TASKER_ENV) is not development, test or production and the config has no [environments.%s] overlay",
			env, toml.Key{env}))
	}

	fromEnv := map[string]string{}
	if getenv != nil {
		for _, o := range envOverrides {
			if v := getenv(o.name); v != "" {
				o.set(cfg, v)
				fromEnv[o.key] = o.name
			}
		}
	}

	var verr *ValidationError
	if errors.As(cfg.Validate(), &verr) {
		for _, p := range verr.Problems {
			key, _, _ := strings.Cut(p, " ")
			if name, ok := fromEnv[key]; ok {
				p += " (set by " + name + ")"
			}
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	for i := range cfg.Schedules {
		cfg.Schedules[i].fillDefaults()
	}
	return cfg, nil
}

// decodeError rewords a TOML decoding error so it starts with the key.
func decodeError(err error) error {
	var perr toml.ParseError
	if errors.As(err, &perr) {
		if perr.LastKey != "" {
			return fmt.Errorf("%s (line %d): %s", perr.LastKey, perr.Position.Line, perr.Message)
		}
		return fmt.Errorf("parsing config (line %d): %s", perr.Position.Line, perr.Message)
	}
	// Other decoding errors already say where ("toml: line 3 (last key ...)").
	return fmt.Errorf("parsing config: %s", strings.TrimPrefix(err.Error(), "toml: "))
}

// overlay copies into dst every field of src whose key (prefix plus the
// field's TOML name) is defined in the document, recursing into tables and map
// entries, so a layer overrides only the keys it contains. TOML decoding alone
// cannot do this for maps: it decodes every map entry from scratch.
func overlay(md *toml.MetaData, prefix toml.Key, dst, src reflect.Value) {
	t := dst.Type()
	for i := range t.NumField() {
		name := tomlName(t.Field(i))
		if name == "" {
			continue
		}
		key := append(slices.Clip(prefix), name)
		if md.IsDefined(key...) {
			overlayValue(md, key, dst.Field(i), src.Field(i))
		}
	}
}

func overlayValue(md *toml.MetaData, key toml.Key, dst, src reflect.Value) {
	switch dst.Kind() {
	case reflect.Struct:
		overlay(md, key, dst, src)
	case reflect.Map:
		if dst.IsNil() {
			dst.Set(reflect.MakeMap(dst.Type()))
		}
		for k, v := range src.Seq2() {
			entry := reflect.New(dst.Type().Elem()).Elem()
			if cur := dst.MapIndex(k); cur.IsValid() {
				entry.Set(cur)
			} else if entry.Type() == reflect.TypeFor[Namespace]() {
				entry.Set(reflect.ValueOf(defaultNamespace()))
			}
			overlayValue(md, append(slices.Clip(key), k.String()), entry, v)
			dst.SetMapIndex(k, entry)
		}
	default:
		dst.Set(src)
	}
}

// tomlName is the TOML key of a struct field, or "" when it has none.
func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if !f.IsExported() || name == "-" || f.Anonymous {
		return ""
	}
	return cmp.Or(name, f.Name)
}

// unknownKeys lists the keys of the document that are not in the schema,
// matched exactly (the TOML decoder alone would accept "Poll_Interval" for
// poll_interval). Only the first unknown part of a key is named: a table with a
// misspelt name is reported once, not once per key in it.
func unknownKeys(md *toml.MetaData) []string {
	var out []string
	for _, k := range slices.Concat(md.Keys(), md.Undecoded()) {
		n := knownPrefix(k)
		if n == len(k) {
			continue
		}
		msg := fmt.Sprintf("unknown config key %q", k[:n+1].String())
		if !slices.Contains(out, msg) {
			out = append(out, msg)
		}
	}
	return out
}

// knownPrefix returns how many leading parts of key name a table or value of
// the file's schema: the Config struct's TOML names, any name as a map key,
// and [environments.<name>] with the shape of Config.
func knownPrefix(key toml.Key) int {
	t := reflect.TypeFor[Config]()
	for i, seg := range key {
		// An array of tables ([[schedules]]) names its entries' keys
		// without an index.
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
			t = t.Elem()
		}
		switch {
		case t.Kind() == reflect.Interface:
			// A free-form value (a schedule's context) holds any keys.
			return len(key)
		case i == 0 && seg == "environments":
			t = reflect.TypeFor[map[string]Config]()
		case t.Kind() == reflect.Struct:
			f, ok := fieldByTOMLName(t, seg)
			if !ok {
				return i
			}
			t = f.Type
		case t.Kind() == reflect.Map:
			t = t.Elem()
		default: // a value has no keys under it
			return i
		}
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	return len(key)
}

func fieldByTOMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); tomlName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
