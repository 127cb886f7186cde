package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tasker-run/tasker/workflow"
)

// Names under which Register adds the built-in handlers.
const (
	NameHTTP  = "http"
	NameNoop  = "noop"
	NameSleep = "sleep"
)

// KindBadConfig is the permanent error of a step whose config the handler
// cannot use. The message names the offending key.
const KindBadConfig = "bad_config"

// Register adds the built-in handlers to reg: "http" (built with opts),
// "noop" and "sleep".
func Register(reg *workflow.Registry, opts HTTPOptions) error {
	for _, e := range []struct {
		name string
		h    workflow.Handler
	}{
		{NameHTTP, NewHTTP(opts)},
		{NameNoop, Noop()},
		{NameSleep, Sleep()},
	} {
		if err := reg.Register(e.name, e.h); err != nil {
			return fmt.Errorf("registering built-in handlers: %w", err)
		}
	}
	return nil
}

// Noop returns a handler that does nothing and succeeds with {}, or with the
// value of its config key "result" when one is given.
func Noop() workflow.Handler {
	return workflow.HandlerFunc(func(_ context.Context, in workflow.StepInput) (json.RawMessage, error) {
		cfg, err := configKeys(in.Config, "result")
		if err != nil {
			return nil, err
		}
		if r, ok := cfg["result"]; ok {
			return r, nil
		}
		return json.RawMessage(`{}`), nil
	})
}

// Sleep returns a handler that waits for its config key "duration" (a Go
// duration such as "250ms") and succeeds with {"slept_ms": N}. It returns
// ctx's error, wrapped, when ctx ends first.
func Sleep() workflow.Handler {
	return workflow.HandlerFunc(func(ctx context.Context, in workflow.StepInput) (json.RawMessage, error) {
		cfg, err := configKeys(in.Config, "duration")
		if err != nil {
			return nil, err
		}
		raw, ok := cfg["duration"]
		if !ok {
			return nil, workflow.Permanent(KindBadConfig, `duration is required, e.g. "250ms"`)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, workflow.Permanent(KindBadConfig, `duration must be a string such as "250ms", got %s`, raw)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, workflow.Permanent(KindBadConfig, `duration %q is not a duration such as "250ms"`, s)
		}
		if d < 0 {
			return nil, workflow.Permanent(KindBadConfig, "duration %q must not be negative", s)
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sleeping %s: %w", d, ctx.Err())
		case <-t.C:
		}
		return json.Marshal(map[string]int64{"slept_ms": d.Milliseconds()})
	})
}

// configKeys splits a step config object into its keys, rejecting keys not
// in known. An absent config (empty or null) has no keys.
func configKeys(raw json.RawMessage, known ...string) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]json.RawMessage{}, nil
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, workflow.Permanent(KindBadConfig, "config must be a table")
	}
	var unknown []string
	for k := range cfg {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, workflow.Permanent(KindBadConfig, "unknown config key %s (known: %s)",
			strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	return cfg, nil
}
