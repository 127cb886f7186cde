package store_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/examples"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/testsupport"
)

// TestReferenceWorkflows runs the four numeric reference workflows to the
// end and checks every intermediate value and the whole history.
func TestReferenceWorkflows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		namespace, name string
		n               int
		want            map[string]float64
	}{
		{testsupport.LinearNamespace, testsupport.LinearName, 6, map[string]float64{
			"linear_step_1": 36, "linear_step_2": 46, "linear_step_3": 138, "linear_step_4": 69,
		}},
		{testsupport.DiamondNamespace, testsupport.DiamondName, 4, map[string]float64{
			"diamond_start": 16, "diamond_branch_b": 41, "diamond_branch_c": 32, "diamond_end": 36.5,
		}},
		{testsupport.TreeNamespace, testsupport.TreeName, 2, map[string]float64{
			"tree_root": 4, "tree_branch_left": 16, "tree_branch_right": 16,
			"tree_leaf_d": 256, "tree_leaf_e": 256, "tree_leaf_f": 256, "tree_leaf_g": 256,
			"tree_final_convergence": 4294967296,
		}},
		{testsupport.MixedDAGNamespace, testsupport.MixedDAGName, 2, map[string]float64{
			"dag_init": 4, "dag_process_left": 16, "dag_process_right": 16,
			"dag_validate": 256, "dag_transform": 256, "dag_analyze": 256,
			"dag_finalize": 16777216,
		}},
	}
	for _, install := range []struct {
		name      string
		otherPgmq bool
	}{{"tasker_pgmq", false}, {"other_pgmq", true}} {
		for _, tc := range cases {
			t.Run(install.name+"/"+tc.namespace, func(t *testing.T) {
				t.Parallel()
				h := newHarnessOn(t, store.Options{}, install.otherPgmq)
				ctxJSON, err := json.Marshal(map[string]int{"even_number": tc.n})
				require.NoError(t, err)
				task := h.submit(tc.namespace, tc.name, string(ctxJSON))

				d := h.runToEnd(task)
				requireCleanRun(t, d)
				require.Len(t, d.Steps, len(tc.want))
				for _, s := range d.Steps {
					require.Equal(t, tc.want[s.Name], number(t, s.Result), s.Name)
				}
				require.JSONEq(t, string(ctxJSON), string(d.Context))
				require.Zero(t, h.queueLen(tc.namespace+"_queue"), "step messages left behind")
				require.Zero(t, h.queueLen("orchestration_step_results"), "result messages left behind")
			})
		}
	}
}

// TestFulfillmentWorkflow runs the order workflow on the sample order: every
// step completes, in dependency order, with the values the order implies.
func TestFulfillmentWorkflow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, store.Options{})
	task := h.submit(testsupport.FulfillmentNamespace, testsupport.FulfillmentName, examples.SampleOrder)

	d := h.runToEnd(task)
	requireCleanRun(t, d)
	order := []string{"validate_order", "reserve_inventory", "process_payment", "ship_order"}
	require.Equal(t, order, completionOrder(d))

	results := map[string]map[string]any{}
	for _, s := range d.Steps {
		var r map[string]any
		require.NoError(t, json.Unmarshal(s.Result, &r), s.Name)
		require.Equal(t, "ord_1001", r["order_id"], s.Name)
		results[s.Name] = r
	}
	require.Equal(t, true, results["validate_order"]["validated"])
	require.Equal(t, 25.0, results["validate_order"]["total"])
	require.Equal(t, true, results["reserve_inventory"]["reserved"])
	require.Equal(t, 25.0, results["process_payment"]["charged"])
	require.Equal(t, "captured", results["process_payment"]["status"])
	require.Equal(t, true, results["ship_order"]["shipped"])
	require.Equal(t, "TRK-ord_1001", results["ship_order"]["tracking_number"])
	require.Equal(t, []string{"validate_order", "reserve_inventory"}, step(t, d, "process_payment").DependsOn)
	require.Equal(t, 5, step(t, d, "process_payment").MaxAttempts)
	require.Equal(t, 1, step(t, d, "validate_order").MaxAttempts)
}
