package actors

import (
	"time"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
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
	// Started is the attempt the poller's read started (store.StepsTake),
	// as immutable values; its Attempt is 0 when the read started none,
	// and the worker starts the step itself.
	Started store.StartedAttempt
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

// outcomeDue hands an outcome a worker of this node recorded (without a
// result message) to the step-result actor, or one it carries to be
// recorded with its application (Due.Carried; the actor answers
// carriedApplied). ReadCount and Lease are those of the step message,
// which stays invisible until the outcome is applied.
type outcomeDue struct {
	Due       store.OutcomeDue
	ReadCount int
	Lease     time.Time
}

// carriedApplied answers an outcomeDue whose outcome was carried
// (store.OutcomeDue.Carried): OK once it was recorded and applied.
type carriedApplied struct{ OK bool }

// duePanicked carries a panic of an outcome's application, raised again in
// the step-result actor so that its supervisor restarts it.
type duePanicked struct{ Value any }

// tailPanicked carries a panic of a worker's tail (the wait for a carried
// outcome's apply, and the recording after it), raised again in the worker
// so that its supervisor restarts it.
type tailPanicked struct{ Value any }
