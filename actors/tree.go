package actors

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kinds of nodes in the tree.
const (
	KindRoot         = "root_supervisor"
	KindTaskRequests = "task_request_actor"
	KindStepResults  = "step_result_actor"
	KindNamespace    = "namespace_supervisor"
	KindPoller       = "poller"
	KindWorker       = "worker"
	KindBreaker      = "circuit_breaker"
	// KindScheduler and KindRetention are in maintenance.go, KindAdmission
	// in admission.go.
)

// Statuses of a node.
const (
	StatusStarting   = "starting"
	StatusRunning    = "running"
	StatusRestarting = "restarting"
	StatusStopped    = "stopped"
	StatusGaveUp     = "gave_up"
)

// Node is the observable state of one actor (or breaker) of the tree.
type Node struct {
	Name          string     `json:"name"`
	Kind          string     `json:"kind"`
	PID           string     `json:"pid,omitempty"`
	Parent        string     `json:"parent,omitempty"`
	Namespace     string     `json:"namespace,omitempty"`
	Status        string     `json:"status"`
	Restarts      int        `json:"restarts"`
	LastFailure   string     `json:"last_failure,omitempty"`
	LastFailureAt *time.Time `json:"last_failure_at,omitempty"`
	Queue         string     `json:"queue,omitempty"`
	BreakerState  string     `json:"breaker_state,omitempty"`
	LastPollAt    *time.Time `json:"last_poll_at,omitempty"`
	// Busy is true while a worker runs a step.
	Busy bool `json:"busy,omitempty"`
	// Detail is what a maintenance actor last did.
	Detail   string `json:"detail,omitempty"`
	Children []Node `json:"children,omitempty"`
}

// Tree records the state of every actor of a node so /debug/actors can show
// it without asking the actors (a stuck actor still shows its last state).
// It is safe for concurrent use.
type Tree struct {
	mu     sync.Mutex
	nodes  map[string]*Node
	nodeID string
}

// NewTree returns an empty tree for the node nodeID.
func NewTree(nodeID string) *Tree { return &Tree{nodes: map[string]*Node{}, nodeID: nodeID} }

// update applies fn to the node at path, creating it if needed.
func (t *Tree) update(path string, fn func(n *Node)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.nodes[path]
	if !ok {
		n = &Node{PID: path, Status: StatusStarting}
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			n.Parent = path[:i]
			n.Name = path[i+1:]
		} else {
			n.Name = path
		}
		t.nodes[path] = n
	}
	fn(n)
}

// declare registers a node with its kind before it starts.
func (t *Tree) declare(path, kind, namespace, queue string) {
	t.update(path, func(n *Node) {
		n.Kind, n.Namespace, n.Queue = kind, namespace, queue
	})
}

// remove drops the node at path and its descendants.
func (t *Tree) remove(path string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.nodes {
		if k == path || strings.HasPrefix(k, path+"/") {
			delete(t.nodes, k)
		}
	}
}

func (t *Tree) setStatus(path, status string) {
	t.update(path, func(n *Node) {
		// Giving up stops the actor, whose Stopping would otherwise hide
		// why it stopped.
		if n.Status == StatusGaveUp && status == StatusStopped {
			return
		}
		n.Status = status
	})
}

// recordFailure counts a restart (or give-up) of the node at path.
func (t *Tree) recordFailure(path string, reason any, status string) {
	now := time.Now()
	t.update(path, func(n *Node) {
		if status == StatusRestarting {
			n.Restarts++
		}
		n.Status = status
		n.LastFailure = fmt.Sprint(reason)
		if len(n.LastFailure) > 500 {
			n.LastFailure = n.LastFailure[:500] + "…"
		}
		n.LastFailureAt = &now
	})
}

// polled records a poll and the state of the breaker it went through.
func (t *Tree) polled(path, breakerState string) {
	now := time.Now()
	t.update(path, func(n *Node) { n.LastPollAt, n.BreakerState = &now, breakerState })
}

func (t *Tree) setBreaker(path, state string) {
	t.update(path, func(n *Node) { n.BreakerState = state })
}

func (t *Tree) setDetail(path, detail string) {
	if len(detail) > 500 {
		detail = detail[:500] + "…"
	}
	t.update(path, func(n *Node) { n.Detail = detail })
}

func (t *Tree) setBusy(path string, busy bool) {
	t.update(path, func(n *Node) { n.Busy = busy })
}

// Snapshot returns the tree as nested nodes, children sorted by name.
func (t *Tree) Snapshot() []Node {
	t.mu.Lock()
	flat := make(map[string]Node, len(t.nodes))
	for k, n := range t.nodes {
		flat[k] = *n
	}
	t.mu.Unlock()

	children := map[string][]string{}
	var roots []string
	for k, n := range flat {
		if _, ok := flat[n.Parent]; ok {
			children[n.Parent] = append(children[n.Parent], k)
		} else {
			roots = append(roots, k)
		}
	}
	var build func(k string) Node
	build = func(k string) Node {
		n := flat[k]
		kids := children[k]
		sort.Strings(kids)
		sort.SliceStable(kids, func(i, j int) bool { return kindOrder(flat[kids[i]].Kind) < kindOrder(flat[kids[j]].Kind) })
		n.Children = nil
		for _, c := range kids {
			n.Children = append(n.Children, build(c))
		}
		return n
	}
	sort.Strings(roots)
	out := make([]Node, 0, len(roots))
	for _, r := range roots {
		out = append(out, build(r))
	}
	return out
}

// Find returns the node at path.
func (t *Tree) Find(path string) (Node, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.nodes[path]
	if !ok {
		return Node{}, false
	}
	return *n, true
}

// All returns every node, unordered.
func (t *Tree) All() []Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Node, 0, len(t.nodes))
	for _, n := range t.nodes {
		out = append(out, *n)
	}
	return out
}

func kindOrder(kind string) int {
	switch kind {
	case KindTaskRequests:
		return 0
	case KindStepResults:
		return 1
	case KindScheduler, KindRetention, KindAdmission:
		return 2
	case KindNamespace:
		return 2
	case KindBreaker:
		return 3
	case KindPoller:
		return 4
	default:
		return 5
	}
}

// WriteText writes nodes as an indented, readable tree.
func WriteText(w io.Writer, nodes []Node) error {
	var write func(n Node, prefix string, last bool, top bool) error
	write = func(n Node, prefix string, last bool, top bool) error {
		branch, next := "├── ", "│   "
		if last {
			branch, next = "└── ", "    "
		}
		if top {
			branch, next = "", ""
		}
		line := fmt.Sprintf("%s%s%s [%s] %s", prefix, branch, n.Name, n.Kind, n.Status)
		if n.Restarts > 0 {
			line += fmt.Sprintf(" restarts=%d", n.Restarts)
		}
		if n.Queue != "" {
			line += " queue=" + n.Queue
		}
		if n.BreakerState != "" {
			line += " breaker=" + n.BreakerState
		}
		if n.Busy {
			line += " busy"
		}
		if n.LastPollAt != nil {
			line += " last_poll=" + n.LastPollAt.Format(time.RFC3339Nano)
		}
		if n.Detail != "" {
			line += fmt.Sprintf(" detail=%q", n.Detail)
		}
		if n.LastFailure != "" {
			line += fmt.Sprintf(" last_failure=%q", n.LastFailure)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
		for i, c := range n.Children {
			if err := write(c, prefix+next, i == len(n.Children)-1, false); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range nodes {
		if err := write(n, "", true, true); err != nil {
			return err
		}
	}
	return nil
}
