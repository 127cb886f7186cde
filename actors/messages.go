package actors

import "github.com/google/uuid"

// pollTick asks a poller to read its queue. Gen tells a current tick from
// one that was superseded by a newer schedule.
type pollTick struct{ Gen int }

// wake asks a poller to read now: a message has just arrived.
type wake struct{}

// stepJob hands one step message to a worker.
type stepJob struct {
	MsgID     int64
	ReadCount int
	TaskUUID  uuid.UUID
	StepUUID  uuid.UUID
}

// workerFree tells the poller that worker Index can take a job.
type workerFree struct{ Index int }

// announce asks every worker to say whether it is free (a restarted poller
// has forgotten).
type announce struct{}
