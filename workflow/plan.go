package workflow

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// Reasons of the transitions a task starts with.
const (
	ReasonTaskCreated = "task created"
	ReasonTaskStarted = "first steps enqueued"
	ReasonStepReady   = "ready"
	// ReasonStepThrottled is the reason of a ready step's wait for its
	// admission under flow limits.
	ReasonStepThrottled = "ready; waiting for a slot under its flow limits"
)

// Plan is every row a new task starts with: its steps in template order,
// the edges between them, and the first transitions of the task and of its
// steps. The roots are enqueued at once, so a plan's task starts in
// progress.
type Plan struct {
	Task  uuid.UUID
	Steps []PlannedStep
	// Edges index Steps: From is a parent of To.
	Edges []Edge
	// State is the task's state once created.
	State     TaskState
	TaskMoves []TaskMove
	StepMoves []StepMove
}

// PlannedStep is one step of a new task.
type PlannedStep struct {
	ID uuid.UUID
	StepTemplate
	// State is pending, or enqueued for a root (throttled for a root
	// under a flow limit).
	State StepState
	// Groups are the flow groups the step counts in, and Key its
	// concurrency key (see StepGroups).
	Groups []Group
	Key    string
}

// Root reports whether the step depends on nothing.
func (s PlannedStep) Root() bool { return len(s.DependsOn) == 0 }

// Edge is a dependency between two steps of a plan, by index.
type Edge struct{ From, To int }

// TaskMove is a task transition; From is empty for the creation.
type TaskMove struct {
	From, To TaskState
	Reason   string
}

// StepMove is a transition of the step at index Step; From is empty for the
// creation.
type StepMove struct {
	Step     int
	From, To StepState
	Reason   string
}

// TaskFlow is what the flow control of a new task's steps depends on: the
// node's policy, the template, and the task's context its keys are
// rendered from.
type TaskFlow struct {
	Policy              FlowPolicy
	Namespace, Template string
	Context             json.RawMessage
}

// PlanTask lays out a new task of the template whose steps are given, with
// identities from newID (a UUIDv7 source in production), under no flow
// limit.
func PlanTask(steps []StepTemplate, newID func() (uuid.UUID, error)) (Plan, error) {
	return PlanTaskFlow(steps, TaskFlow{}, newID)
}

// PlanTaskFlow is PlanTask with the flow control of flow: a root under a
// limit starts throttled rather than enqueued. It fails when a concurrency
// key cannot be rendered from the context.
func PlanTaskFlow(steps []StepTemplate, flow TaskFlow, newID func() (uuid.UUID, error)) (Plan, error) {
	var p Plan
	var err error
	if p.Task, err = newID(); err != nil {
		return Plan{}, err
	}
	if p.State, err = TaskTransition(TaskStatePending, TaskEventStart); err != nil {
		return Plan{}, err
	}
	ready, err := StepTransition(StepStatePending, StepEventEnqueue)
	if err != nil {
		return Plan{}, err
	}
	p.TaskMoves = []TaskMove{
		{To: TaskStatePending, Reason: ReasonTaskCreated},
		{From: TaskStatePending, To: p.State, Reason: ReasonTaskStarted},
	}
	index := make(map[string]int, len(steps))
	p.Steps = make([]PlannedStep, len(steps))
	for i, st := range steps {
		id, err := newID()
		if err != nil {
			return Plan{}, err
		}
		index[st.Name] = i
		groups, key, err := StepGroups(flow.Policy, flow.Namespace, flow.Template, st, flow.Context)
		if err != nil {
			return Plan{}, err
		}
		p.Steps[i] = PlannedStep{ID: id, StepTemplate: st, State: StepStatePending, Groups: groups, Key: key}
	}
	throttled, err := StepTransition(StepStatePending, StepEventThrottle)
	if err != nil {
		return Plan{}, err
	}
	roots := 0
	for i, st := range p.Steps {
		for _, dep := range st.DependsOn {
			j, ok := index[dep]
			if !ok {
				return Plan{}, fmt.Errorf("step %s depends on unknown step %s", st.Name, dep)
			}
			p.Edges = append(p.Edges, Edge{From: j, To: i})
		}
		p.StepMoves = append(p.StepMoves, StepMove{Step: i, To: StepStatePending, Reason: ReasonTaskCreated})
		if st.Root() {
			roots++
			to, why := ready, ReasonStepReady
			if len(st.Groups) > 0 {
				to, why = throttled, ReasonStepThrottled
			}
			p.Steps[i].State = to
			p.StepMoves = append(p.StepMoves, StepMove{Step: i, From: StepStatePending, To: to, Reason: why})
		}
	}
	if roots == 0 {
		return Plan{}, fmt.Errorf("no step without dependencies")
	}
	return p, nil
}

// Layers gives each step of a DAG its depth, for drawing it: 0 for a step
// without parents, else one more than its deepest parent. dependsOn[i] names
// the parents of the step names[i]; an unknown parent is left out, and a
// cycle (which validation refuses) is cut where it closes.
func Layers(names []string, dependsOn [][]string) []int {
	index := make(map[string]int, len(names))
	for i, n := range names {
		index[n] = i
	}
	layers := make([]int, len(names))
	const (
		_ = iota // unseen
		visiting
		done
	)
	mark := make([]int, len(names))
	var depth func(i int) int
	depth = func(i int) int {
		switch mark[i] {
		case done:
			return layers[i]
		case visiting:
			return 0
		}
		mark[i] = visiting
		d := 0
		for _, p := range dependsOn[i] {
			if j, ok := index[p]; ok {
				d = max(d, depth(j)+1)
			}
		}
		mark[i], layers[i] = done, d
		return d
	}
	for i := range names {
		depth(i)
	}
	return layers
}
