package actors

import (
	"time"

	"github.com/google/uuid"
)

// pollTick asks a poller to read its queue. Gen tells a current tick from
// one that was superseded by a newer schedule.
type pollTick struct{ Gen int }

// wake asks a poller to read now: a message has just arrived.
type wake struct{}

// stepJob hands one step message to a worker.
type stepJob struct {
	MsgID     int64
	ReadCount int
	// Lease is when the message becomes visible to other readers, unless
	// the worker extends it.
	Lease    time.Time
	TaskUUID uuid.UUID
	StepUUID uuid.UUID
	// Undecodable says why the message is no step message (StepUUID is
	// then nil); empty for a good one.
	Undecodable string
}

// workerFree tells the poller that worker Index can take a job. Announce
// marks a reply to the announce of the poller incarnation Epoch; a worker
// sends one after every job and once when it starts.
type workerFree struct {
	Index    int
	Announce bool
	Epoch    uint64
}

// announce asks every worker to say whether it is free (a restarted poller
// has forgotten). Epoch identifies the poller incarnation that asks.
type announce struct{ Epoch uint64 }
