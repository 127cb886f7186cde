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
