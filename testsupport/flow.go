package testsupport

import (
	"testing/fstest"
	"time"

	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/config"
)

// The flow template of WithFlowLimits: one step that sleeps far longer than
// any test, one slot per customer, so a second task of a customer waits,
// throttled, for as long as the test runs.
const (
	FlowNamespace = "flow_vis"
	FlowName      = "per_customer"
	// FlowKeyScope is the scope of its key groups: key:<scope>=<customer>.
	FlowKeyScope = FlowNamespace + "/" + FlowName
	// FlowHandlerRate is the rate WithFlowLimits sets on the sleep handler,
	// FlowNamespaceMax the namespace's max_in_flight.
	FlowHandlerRate  = "100/s"
	FlowNamespaceMax = 10
)

const flowTemplate = `namespace = "flow_vis"
name = "per_customer"
version = "1.0.0"
description = "One long nap per customer at a time."
concurrency_key = "{{context.customer}}"
max_per_key = 1

[[steps]]
name = "nap"
handler = "sleep"
timeout = "5m"
config = { duration = "1m" }
`

// WithFlowLimits adds the flow template, a namespace limit on its namespace
// (FlowNamespaceMax) and a rate on the sleep handler (FlowHandlerRate), and
// cuts the shutdown short, so the sleeping handlers are cancelled when the
// test ends. A task's context names its customer: {"customer": "c1"}.
func WithFlowLimits() NodeOption {
	return func(cfg *config.Config, opts *bootstrap.Options) {
		opts.Templates = append(opts.Templates, fstest.MapFS{"flow_vis/per_customer.toml": {Data: []byte(flowTemplate)}})
		cfg.Namespaces[FlowNamespace] = config.Namespace{Workers: 3, MaxInFlight: FlowNamespaceMax}
		if cfg.Flow.Handlers == nil {
			cfg.Flow.Handlers = map[string]config.HandlerFlow{}
		}
		cfg.Flow.Handlers["sleep"] = config.HandlerFlow{Rate: FlowHandlerRate}
		cfg.Shutdown.Timeout = config.Duration(200 * time.Millisecond)
	}
}
