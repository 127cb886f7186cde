package store

import (
	"context"
	"fmt"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// WorkerLimits are the limits a node applies to its workers' outcomes,
// published for the workers outside Go.
type WorkerLimits struct {
	// MaxResultBytes is the largest result; 0 means
	// workflow.MaxResultBytesDefault.
	MaxResultBytes int
	// MaxDeliveries fails a step as poison when its message was read more
	// often; 0 means no limit.
	MaxDeliveries int
}

// WorkerContractPublish writes the rules the SQL worker contract
// (tasker.step_begin, step_complete, step_fail, step_heartbeat) follows:
// the state machine's start and outcome states, the transitions' reasons and
// lim. Every node publishes at start-up; the last one's rules hold.
func (s *Store) WorkerContractPublish(ctx context.Context, lim WorkerLimits) error {
	if lim.MaxResultBytes <= 0 {
		lim.MaxResultBytes = workflow.MaxResultBytesDefault
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO tasker.worker_contract (start_from, start_to, outcome_states, reason_taken, reason_redelivered,
    max_result_bytes, max_json_depth, max_deliveries, result_queue, wake_channel, node_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET start_from = EXCLUDED.start_from, start_to = EXCLUDED.start_to,
    outcome_states = EXCLUDED.outcome_states, reason_taken = EXCLUDED.reason_taken,
    reason_redelivered = EXCLUDED.reason_redelivered, max_result_bytes = EXCLUDED.max_result_bytes,
    max_json_depth = EXCLUDED.max_json_depth, max_deliveries = EXCLUDED.max_deliveries,
    result_queue = EXCLUDED.result_queue, wake_channel = EXCLUDED.wake_channel,
    node_id = EXCLUDED.node_id, published_at = now()`,
		startFrom, startTo, outcomeStates, reasonTaken, reasonRedelivered,
		lim.MaxResultBytes, workflow.MaxJSONDepth, lim.MaxDeliveries, queue.StepResultsQueue, WakeChannel, s.nodeID)
	if err != nil {
		return fmt.Errorf("publishing the worker contract: %w", err)
	}
	return nil
}
