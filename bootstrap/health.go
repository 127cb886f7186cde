package bootstrap

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/tasker-run/tasker/actors"
	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/store"
)

// Health computes the node's health, once per call; the HTTP handlers
// only encode it. With detail it also reads queue depths
// and pool statistics.
func (n *Node) Health(ctx context.Context, detail bool) api.Health {
	h := api.Health{Status: api.HealthOK, NodeID: n.nodeID, Uptime: time.Since(n.started).Round(time.Second).String(), Breakers: map[string]string{}}
	unhealthy := func(format string, args ...any) {
		h.Status = api.HealthUnhealthy
		h.Reasons = append(h.Reasons, fmt.Sprintf(format, args...))
	}

	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h.Database.SchemaWanted = store.SchemaVersion()
	if err := n.pool.Ping(dctx); err != nil {
		h.Database.Error = err.Error()
		unhealthy("database unreachable: %v", err)
	} else {
		h.Database.Reachable = true
		v, err := store.CurrentVersion(dctx, n.pool)
		h.Database.SchemaVersion = v
		switch {
		case err != nil:
			unhealthy("reading schema version: %v", err)
		case v != h.Database.SchemaWanted:
			unhealthy("schema version %d, this node needs %d", v, h.Database.SchemaWanted)
		}
	}

	if n.system == nil || !n.system.Running() {
		unhealthy("actor tree not running")
	}
	if n.system != nil {
		names := make([]string, 0)
		for name, b := range n.system.Breakers() {
			h.Breakers[name] = b.State()
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			switch h.Breakers[name] {
			case "open":
				unhealthy("circuit breaker %s is open", name)
			case "half-open":
				if h.Status == api.HealthOK {
					h.Status = api.HealthDegraded
				}
				h.Reasons = append(h.Reasons, fmt.Sprintf("circuit breaker %s is half-open", name))
			}
		}
		for _, path := range n.system.GaveUp() {
			h.GaveUp = append(h.GaveUp, path)
			unhealthy("%s gave up after repeated failures", path)
		}
	}

	if warn := n.cfg.Health.XminHorizonWarn.Duration(); warn > 0 && h.Database.Reachable {
		if x, err := n.xminHorizon(dctx, warn); err != nil {
			h.Reasons = append(h.Reasons, err.Error())
		} else if x != nil {
			h.XminHorizon = &x.XminHorizon
			if x.Held {
				if h.Status == api.HealthOK {
					h.Status = api.HealthDegraded
				}
				h.Reasons = append(h.Reasons, fmt.Sprintf("the xmin horizon is held back by %s: VACUUM cannot remove dead queue messages and step rows", x.holder))
			}
		}
	}

	if ext := externalNamespaces(n.cfg, n.namespaces()); len(ext) > 0 {
		h.External = ext
	}
	if detail && h.Database.Reachable {
		h.Queues = n.queueDepths(dctx)
		if flow, err := n.flowHealth(dctx); err != nil {
			h.Reasons = append(h.Reasons, err.Error())
		} else {
			h.Flow = flow
		}
		st := n.pool.Stat()
		h.Pool = &api.PoolStats{Total: st.TotalConns(), Idle: st.IdleConns(), Acquired: st.AcquiredConns(), Max: st.MaxConns()}
	}
	return h
}

// horizonHolder is api.XminHorizon with the holder's description, for the
// reason.
type horizonHolder struct {
	api.XminHorizon
	holder string
}

// xminHorizon reads the oldest holder of the database's xmin horizon; nil
// when nothing holds it or the holder is younger than a second (the node's
// own statements, and everyone's, hold it for milliseconds). It is held
// when older than warn, or when it is an inactive replication slot, which
// never lets go by itself.
func (n *Node) xminHorizon(ctx context.Context, warn time.Duration) (*horizonHolder, error) {
	hh, ok, err := store.OldestHorizonHolder(ctx, n.pool)
	if err != nil {
		return nil, err
	}
	slot := hh.Kind == store.HolderReplicationSlot
	if !ok || (!slot && hh.Age < time.Second) {
		return nil, nil
	}
	x := &horizonHolder{holder: hh.String(), XminHorizon: api.XminHorizon{
		Held:            hh.Age >= warn || (slot && hh.State == "inactive"),
		Kind:            hh.Kind,
		PID:             hh.PID,
		Name:            hh.Name,
		ApplicationName: hh.ApplicationName,
		State:           hh.State,
		AgeSeconds:      hh.Age.Seconds(),
		XidAge:          hh.XidAge,
	}}
	if !hh.Since.IsZero() {
		x.Since = hh.Since.UTC().Format(time.RFC3339)
	}
	return x, nil
}

// flowHealth lists the namespaces with a configured limit or a step under
// one, with their counts.
func (n *Node) flowHealth(ctx context.Context) ([]api.FlowHealth, error) {
	usage, err := n.store.FlowNamespaceUsage(ctx)
	if err != nil {
		return nil, err
	}
	policy := n.store.FlowPolicy()
	byName := map[string]*api.FlowHealth{}
	for name, l := range policy.Namespaces {
		byName[name] = &api.FlowHealth{Namespace: name, MaxInFlight: l.MaxInFlight, Rate: l.Rate.String(), Burst: l.Burst}
	}
	now := time.Now()
	for _, u := range usage {
		f := byName[u.Namespace]
		if f == nil {
			f = &api.FlowHealth{Namespace: u.Namespace}
			byName[u.Namespace] = f
		}
		f.InUse, f.Waiting = u.InUse, u.Waiting
		if u.OldestWait != nil {
			f.OldestWaitSecs = max(0, now.Sub(*u.OldestWait).Seconds())
		}
	}
	out := make([]api.FlowHealth, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	return out, nil
}

func (n *Node) queueDepths(ctx context.Context) []api.QueueDepth {
	names := []string{queue.TaskRequestsQueue, queue.StepResultsQueue}
	for _, ns := range n.namespaces() {
		names = append(names, queue.NamespaceQueue(ns))
	}
	qc := n.store.Queue()
	out := make([]api.QueueDepth, 0, len(names))
	for _, q := range names {
		m, err := qc.Metrics(ctx, q)
		if err != nil {
			continue
		}
		out = append(out, api.QueueDepth{Queue: q, Length: m.Length, Visible: m.VisibleLength, OldestAgeSecs: m.OldestAge.Seconds()})
	}
	return out
}

// treeNodes is the actor tree for /debug/actors.
func (n *Node) treeNodes() []actors.Node {
	if n.system == nil {
		return nil
	}
	return n.system.Tree().Snapshot()
}
