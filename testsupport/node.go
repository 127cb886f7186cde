package testsupport

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
	"github.com/tasker-run/tasker/examples"
)

// NodeOption adjusts the configuration or options of a test node.
type NodeOption func(cfg *config.Config, opts *bootstrap.Options)

// WithConfig changes the test node's configuration.
func WithConfig(fn func(cfg *config.Config)) NodeOption {
	return func(cfg *config.Config, _ *bootstrap.Options) { fn(cfg) }
}

// WithOptions changes the test node's bootstrap options (handlers, extra
// templates).
func WithOptions(fn func(opts *bootstrap.Options)) NodeOption {
	return func(_ *config.Config, opts *bootstrap.Options) { fn(opts) }
}

// TestConfig is the configuration of a test node on databaseURL: the test
// environment's defaults (short polls, timeouts and backoff; a free HTTP
// port), three workers per reference namespace, and the bundled templates.
func TestConfig(databaseURL string) *config.Config {
	cfg := config.Default(config.EnvTest)
	cfg.Database.URL = databaseURL
	cfg.Log.Level = config.LogLevelInfo
	cfg.Log.Format = config.LogFormatJSON
	cfg.Namespaces = map[string]config.Namespace{}
	for _, ns := range []string{LinearNamespace, DiamondNamespace, TreeNamespace, MixedDAGNamespace, FulfillmentNamespace} {
		cfg.Namespaces[ns] = config.Namespace{Workers: 3}
	}
	return cfg
}

// StartNode starts an in-process node on a fresh database and stops it when
// the test ends. Its log goes to the test's log.
func StartNode(t testing.TB, options ...NodeOption) *bootstrap.Node {
	t.Helper()
	return StartNodeOn(t, NewDatabaseURL(t), options...)
}

// StartNodeOn starts an in-process node on an existing database (several
// nodes can share one).
func StartNodeOn(t testing.TB, databaseURL string, options ...NodeOption) *bootstrap.Node {
	t.Helper()
	cfg := TestConfig(databaseURL)
	logs := &testLog{t: t}
	opts := bootstrap.Options{Config: cfg, LogOutput: logs, Bundled: examples.Bundle()}
	for _, o := range options {
		o(cfg, &opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, err := bootstrap.Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting test node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := node.Stop(ctx); err != nil {
			t.Errorf("stopping test node: %v", err)
		}
		logs.close()
	})
	return node
}

// testLog writes a node's log lines to the test log until the test ends.
type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
