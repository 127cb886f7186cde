package testsupport

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// NewMigratedDB is NewDB with Tasker's own schema migrated as well.
func NewMigratedDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := OpenPool(context.Background(), newDatabase(t, templateMigrated))
	if err != nil {
		t.Fatalf("opening pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Registry returns a handler registry with the demo handlers of the five
// reference workflows.
func Registry(t testing.TB) *workflow.Registry {
	t.Helper()
	reg := workflow.NewRegistry()
	if err := examples.Register(reg); err != nil {
		t.Fatalf("registering demo handlers: %v", err)
	}
	return reg
}

// Templates returns the five reference workflow templates, validated
// against the demo handlers.
func Templates(t testing.TB) []*workflow.Template {
	t.Helper()
	ts, err := workflow.LoadDir(examples.Templates(), Registry(t))
	if err != nil {
		t.Fatalf("loading example templates: %v", err)
	}
	return ts
}

// Reference workflow names, as namespace and template name.
const (
	LinearNamespace      = "linear_workflow"
	LinearName           = "mathematical_sequence"
	DiamondNamespace     = "diamond_workflow"
	DiamondName          = "parallel_computation"
	TreeNamespace        = "tree_workflow"
	TreeName             = "hierarchical_computation"
	MixedDAGNamespace    = "mixed_dag_workflow"
	MixedDAGName         = "complex_dag_computation"
	FulfillmentNamespace = "fulfillment"
	FulfillmentName      = "process_order"
)

// NewStore returns a Store on a fresh migrated database with the reference
// templates registered and their queues created.
func NewStore(t testing.TB, opts store.Options) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	pool := NewMigratedDB(t)
	st := store.New(pool, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Queues first, as a node does: a template is usable once visible.
	tmpls := Templates(t)
	var namespaces []string
	for _, tmpl := range tmpls {
		namespaces = append(namespaces, tmpl.Namespace)
	}
	if err := st.EnsureQueues(ctx, namespaces); err != nil {
		t.Fatalf("creating queues: %v", err)
	}
	for _, tmpl := range tmpls {
		if _, err := st.TemplateRegister(ctx, tmpl); err != nil {
			t.Fatalf("registering template: %v", err)
		}
	}
	return st, pool
}
