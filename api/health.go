package api

// Health statuses.
const (
	HealthOK        = "ok"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"
)

// Health is the body of /health and /health/ready. The node computes it
// once per request (Deps.Health); the handlers only encode it.
type Health struct {
	Status   string            `json:"status"`
	NodeID   string            `json:"node_id"`
	Reasons  []string          `json:"reasons,omitempty"`
	Uptime   string            `json:"uptime"`
	Database DatabaseHealth    `json:"database"`
	Breakers map[string]string `json:"breakers"`
	GaveUp   []string          `json:"gave_up,omitempty"`
	// External lists the namespaces whose steps programs outside the node
	// run (namespace.external): they have no workers, pollers or breakers
	// here.
	External []string     `json:"external_namespaces,omitempty"`
	Queues   []QueueDepth `json:"queues,omitempty"`
	Pool     *PoolStats   `json:"pool,omitempty"`
	// XminHorizon is what holds back the database's xmin horizon the
	// longest, when something does and the check is on
	// (health.xmin_horizon_warn).
	XminHorizon *XminHorizon `json:"xmin_horizon,omitempty"`
	// Flow lists, with detail, each namespace with a flow limit or a
	// step under one.
	Flow []FlowHealth `json:"flow,omitempty"`
}

// FlowHealth is one namespace's flow control: the limit the configuration
// sets on it (none when only its templates declare limits) and its use
// across every node. Steps waiting are the limits at work, not a fault:
// they never make the node degraded.
type FlowHealth struct {
	Namespace   string `json:"namespace"`
	MaxInFlight int    `json:"max_in_flight,omitempty"`
	Rate        string `json:"rate,omitempty"`
	Burst       int    `json:"burst,omitempty"`
	// InUse counts the namespace's steps holding a slot, Waiting its
	// throttled steps; OldestWaitSecs is how long the oldest has waited.
	InUse          int     `json:"in_use"`
	Waiting        int     `json:"waiting"`
	OldestWaitSecs float64 `json:"oldest_wait_seconds,omitempty"`
}

// XminHorizon describes the oldest holder of the database's xmin horizon:
// while it holds it, VACUUM removes no row version newer than it, so
// deleted queue messages and replaced step rows pile up in the tables and
// indexes every read walks.
type XminHorizon struct {
	// Held is true when the holder is older than health.xmin_horizon_warn
	// (or is an inactive replication slot): then the status is degraded.
	Held bool `json:"held"`
	// Kind is "backend", "prepared" (a prepared transaction) or
	// "replication_slot".
	Kind string `json:"kind"`
	// PID is the backend's process id (a slot's active_pid; 0 if none).
	PID int32 `json:"pid,omitempty"`
	// Name is a prepared transaction's gid or a slot's name.
	Name            string `json:"name,omitempty"`
	ApplicationName string `json:"application_name,omitempty"`
	State           string `json:"state,omitempty"`
	// Since is when the transaction began (RFC 3339); empty for a slot.
	Since string `json:"since,omitempty"`
	// AgeSeconds is the time since Since; 0 for a slot.
	AgeSeconds float64 `json:"age_seconds"`
	// XidAge is the age of the horizon in transactions.
	XidAge int64 `json:"xid_age"`
}

// DatabaseHealth says whether the database answers and its schema is
// current.
type DatabaseHealth struct {
	Reachable     bool   `json:"reachable"`
	Error         string `json:"error,omitempty"`
	SchemaVersion int    `json:"schema_version"`
	SchemaWanted  int    `json:"schema_wanted"`
}

// QueueDepth is one queue's depth.
type QueueDepth struct {
	Queue         string  `json:"queue"`
	Length        int64   `json:"length"`
	Visible       int64   `json:"visible"`
	OldestAgeSecs float64 `json:"oldest_age_seconds"`
}

// PoolStats describe the connection pool.
type PoolStats struct {
	Total    int32 `json:"total"`
	Idle     int32 `json:"idle"`
	Acquired int32 `json:"acquired"`
	Max      int32 `json:"max"`
}
