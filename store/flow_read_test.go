package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// A throttled step shows why and since when it waits; the namespace and
// scope reads count the slots and the waits, the keys of a scope as one.
func TestFlowReads(t *testing.T) {
	h := newHarness(t, store.Options{})
	h.flowTemplate("per_customer", `concurrency_key = "{{context.customer}}"
max_per_key = 1`, "")
	first := h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "acme"}`)
	second := h.submit(flowNamespace, "per_customer", `{"even_number": 2, "customer": "acme"}`)
	h.submit(flowNamespace, "per_customer", `{"even_number": 4, "customer": "globex"}`)

	d := h.show(second)
	st := step(t, d, "first")
	require.Equal(t, workflow.StepStateThrottled, st.State)
	require.Equal(t, "waiting for its admission", st.ThrottledReason)
	require.NotNil(t, st.ThrottledSince)
	require.Empty(t, step(t, d, "second").ThrottledReason, "a pending step does not wait for a slot")

	require.Zero(t, h.admit().Admitted, "acme's first and globex's were admitted as they were created")
	st = step(t, h.show(second), "first")
	require.Equal(t, "key:"+flowNamespace+"/per_customer=acme: all 1 slots in use", st.ThrottledReason)
	admitted := step(t, h.show(first), "first")
	require.Equal(t, workflow.StepStateEnqueued, admitted.State)
	require.Empty(t, admitted.ThrottledReason)
	require.Nil(t, admitted.ThrottledSince)

	ns, err := h.st.FlowNamespaceUsage(h.ctx)
	require.NoError(t, err)
	require.Len(t, ns, 1)
	require.NotNil(t, ns[0].OldestWait)
	require.Equal(t, store.FlowNamespaceUsage{Namespace: flowNamespace, InUse: 2, Waiting: 1, OldestWait: ns[0].OldestWait}, ns[0])

	scopes, err := h.st.FlowSlotsByScope(h.ctx)
	require.NoError(t, err)
	require.Equal(t, []store.FlowScopeSlots{{Namespace: flowNamespace, Group: "key:" + flowNamespace + "/per_customer", InUse: 2}}, scopes)
}
