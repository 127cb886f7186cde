package dashboard

import (
	"cmp"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/tasker-run/tasker/workflow"
)

// The DAG as an SVG drawing: steps in columns by depth (workflow.Layers),
// parents to the left of their children, each column ordered to cross few
// edges, edges as curves from a parent's right side to a child's left.

// dagStep is a step to draw: its name, its parents, and its state (empty
// for a template's step, which has none).
type dagStep struct {
	Name      string
	DependsOn []string
	State     workflow.StepState
	// Href is where the node links to (the step's row).
	Href string
	// Detail is a second line under the name (the state, a handler).
	Detail string
	// Note ends the node's title: why a throttled step waits.
	Note string
}

// dagDrawing is a laid-out DAG.
type dagDrawing struct {
	Width, Height int
	Nodes         []dagNode
	Edges         []dagEdge
}

type dagNode struct {
	X, Y, W, H int
	Name       string
	Label      string
	Detail     string
	State      string
	// Class colours the node: its state, and blocked for a step that
	// waits on a failed one.
	Class string
	Href  string
	Title string
}

type dagEdge struct {
	From, To string
	Path     string
	Class    string
}

// Sizes of the drawing, in SVG user units.
const (
	dagNodeW   = 168
	dagNodeH   = 44
	dagGapX    = 56
	dagGapY    = 18
	dagMargin  = 8
	dagLabelCh = 20
)

// layoutDAG lays steps out.
func layoutDAG(steps []dagStep) dagDrawing {
	n := len(steps)
	if n == 0 {
		return dagDrawing{}
	}
	names := make([]string, n)
	deps := make([][]string, n)
	index := make(map[string]int, n)
	for i, s := range steps {
		names[i], deps[i], index[s.Name] = s.Name, s.DependsOn, i
	}
	layers := workflow.Layers(names, deps)
	depth := slices.Max(layers)
	columns := make([][]int, depth+1)
	for i, l := range layers {
		columns[l] = append(columns[l], i)
	}
	children := make([][]int, n)
	parents := make([][]int, n)
	for i, ds := range deps {
		for _, d := range ds {
			if j, ok := index[d]; ok {
				parents[i] = append(parents[i], j)
				children[j] = append(children[j], i)
			}
		}
	}

	// Barycentre ordering: a few sweeps right then left, each column sorted
	// by the mean position of its neighbours in the column before.
	pos := make([]float64, n)
	place := func() {
		for _, col := range columns {
			for k, i := range col {
				pos[i] = float64(k)
			}
		}
	}
	place()
	sweep := func(order []int, neighbours [][]int) {
		for _, c := range order {
			col := columns[c]
			key := make(map[int]float64, len(col))
			for _, i := range col {
				key[i] = pos[i]
				if nb := neighbours[i]; len(nb) > 0 {
					var sum float64
					for _, j := range nb {
						sum += pos[j]
					}
					key[i] = sum / float64(len(nb))
				}
			}
			slices.SortStableFunc(col, func(a, b int) int { return cmp.Compare(key[a], key[b]) })
			for k, i := range col {
				pos[i] = float64(k)
			}
		}
	}
	right := make([]int, 0, depth)
	for c := 1; c <= depth; c++ {
		right = append(right, c)
	}
	left := make([]int, 0, depth)
	for c := depth - 1; c >= 0; c-- {
		left = append(left, c)
	}
	for range 4 {
		sweep(right, parents)
		sweep(left, children)
	}

	tallest := 0
	for _, col := range columns {
		tallest = max(tallest, len(col))
	}
	d := dagDrawing{
		Width:  2*dagMargin + (depth+1)*dagNodeW + depth*dagGapX,
		Height: 2*dagMargin + tallest*dagNodeH + (tallest-1)*dagGapY,
	}
	failed := failedBranch(steps, parents)
	at := make([]dagNode, n)
	for c, col := range columns {
		offset := (tallest - len(col)) * (dagNodeH + dagGapY) / 2
		for k, i := range col {
			s := steps[i]
			node := dagNode{
				X: dagMargin + c*(dagNodeW+dagGapX), Y: dagMargin + offset + k*(dagNodeH+dagGapY),
				W: dagNodeW, H: dagNodeH, Name: s.Name, Label: ellipsis(s.Name, dagLabelCh),
				Detail: ellipsis(s.Detail, dagLabelCh+4), State: string(s.State), Href: s.Href,
				Class: "node", Title: s.Name,
			}
			if s.State != "" {
				node.Class += " st-" + string(s.State)
				node.Title += " · " + string(s.State)
			}
			if failed[i] && s.State != workflow.StepStateError {
				node.Class += " blocked"
				node.Title += " · waits on a failed step"
			}
			if s.Note != "" {
				node.Title += " · " + s.Note
			}
			at[i] = node
		}
	}
	for _, col := range columns {
		for _, i := range col {
			d.Nodes = append(d.Nodes, at[i])
		}
	}
	for i := range steps {
		for _, j := range parents[i] {
			p, c := at[j], at[i]
			x1, y1 := p.X+p.W, p.Y+p.H/2
			x2, y2 := c.X, c.Y+c.H/2
			mid := (x1 + x2) / 2
			e := dagEdge{
				From: steps[j].Name, To: steps[i].Name, Class: "edge",
				Path: fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x1, y1, mid, y1, mid, y2, x2, y2),
			}
			switch {
			case failed[j] || steps[j].State == workflow.StepStateError:
				e.Class += " edge-failed"
			case steps[j].State.Satisfies():
				e.Class += " edge-done"
			}
			d.Edges = append(d.Edges, e)
		}
	}
	return d
}

// failedBranch marks the steps that wait, directly or not, on a step in
// error and have not been satisfied otherwise: the branch a failure holds
// up.
func failedBranch(steps []dagStep, parents [][]int) []bool {
	out := make([]bool, len(steps))
	memo := make([]int8, len(steps)) // 0 unknown, 1 no, 2 yes, 3 visiting
	var visit func(i int) bool
	visit = func(i int) bool {
		switch memo[i] {
		case 1, 3:
			return false
		case 2:
			return true
		}
		memo[i] = 3
		held := false
		if !steps[i].State.Satisfies() {
			for _, j := range parents[i] {
				if steps[j].State == workflow.StepStateError || visit(j) {
					held = true
				}
			}
		}
		memo[i] = 1
		if held {
			memo[i] = 2
		}
		return held
	}
	for i := range steps {
		out[i] = visit(i)
	}
	return out
}

// ellipsis shortens s to n characters, marking the cut.
func ellipsis(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
