package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
	"github.com/tasker-run/tasker/workflow"
)

// Schedules start tasks at the times of cron expressions (see
// workflow.Schedule). A check (SchedulesFireDue) holds the due schedules'
// rows and, in one transaction, sends their fires as task requests through
// orchestration_task_requests, records what became of each fire time and
// moves the schedules' next fire times on: a fire is sent once however
// many nodes check, and a check that dies before its commit sends nothing.

// Schedule sources.
const (
	// ScheduleSourceConfig is a schedule declared by a node's
	// configuration ([[schedules]]), written again at each start.
	ScheduleSourceConfig = "config"
	// ScheduleSourceAPI is a schedule created through the API or the CLI.
	ScheduleSourceAPI = "api"
)

// ScheduleInfo is a schedule with its state.
type ScheduleInfo struct {
	workflow.Schedule
	ID         uuid.UUID `json:"schedule_id"`
	Source     string    `json:"source"`
	Paused     bool      `json:"paused"`
	NextFireAt time.Time `json:"next_fire_at"`
	// NextFires are the next fire times from NextFireAt on, at most
	// ScheduleNextFires of them; none while paused.
	NextFires  []time.Time `json:"next_fires,omitempty"`
	LastFireAt *time.Time  `json:"last_fire_at,omitempty"`
	// LastRequestID is the request of the last fire sent; LastTask its
	// task once the request has been accepted.
	LastRequestID *uuid.UUID    `json:"last_request_id,omitempty"`
	LastTask      *ScheduleTask `json:"last_task,omitempty"`
	Fired         int64         `json:"fired"`
	Skipped       int64         `json:"skipped"`
	Missed        int64         `json:"missed"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

// ScheduleTask is the task a fire's request created.
type ScheduleTask struct {
	TaskUUID uuid.UUID          `json:"task_uuid"`
	State    workflow.TaskState `json:"state"`
}

// ScheduleFire is what became of one fire time (or, for missed fires, of
// Count of them, from FireAt to LastFireAt).
type ScheduleFire struct {
	FireAt     time.Time     `json:"fire_at"`
	Outcome    string        `json:"outcome"`
	RequestID  *uuid.UUID    `json:"request_id,omitempty"`
	Task       *ScheduleTask `json:"task,omitempty"`
	Count      int           `json:"count"`
	LastFireAt *time.Time    `json:"last_fire_at,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	NodeID     string        `json:"node_id,omitempty"`
	CreatedAt  time.Time     `json:"created_at"`
}

// Outcomes of a fire time besides the workflow.FireKind of a sent one.
const (
	FireSkipped = "skipped"
	FireMissed  = "missed"
)

// ScheduleNextFires is how many next fire times a listed schedule shows.
const ScheduleNextFires = 3

// schedulesDueBatch is the most schedules one check transaction holds.
const schedulesDueBatch = 32

// scheduleError turns a definition error into a refusal naming the field.
func scheduleError(action string, err error) error {
	var se *workflow.ScheduleError
	if errors.As(err, &se) {
		return &RefusedError{Action: action, Reason: se.Error()}
	}
	return err
}

// ScheduleCreate creates a schedule through the API; a schedule of that
// name is refused. Its first fire is the first fire time after now.
func (s *Store) ScheduleCreate(ctx context.Context, sch workflow.Schedule) (ScheduleInfo, error) {
	if err := sch.Normalize(); err != nil {
		return ScheduleInfo{}, scheduleError("create schedule", err)
	}
	_, created, err := s.scheduleUpsert(ctx, s.pool, sch, ScheduleSourceAPI, false)
	if err != nil {
		return ScheduleInfo{}, err
	}
	if !created {
		return ScheduleInfo{}, &RefusedError{Action: "create schedule", Reason: fmt.Sprintf(
			"a schedule named %q exists; delete it first, or choose another name", sch.Name)}
	}
	return s.ScheduleGet(ctx, sch.Name)
}

// scheduleUpsert creates sch, or (replace) writes it over a schedule of
// that name and source that differs; written is false when nothing was.
func (s *Store) scheduleUpsert(ctx context.Context, d db, sch workflow.Schedule, source string, replace bool) (written, created bool, err error) {
	next, err := sch.Next(s.now())
	if err != nil {
		return false, false, scheduleError("create schedule", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return false, false, err
	}
	err = stmt("schedule_upsert").queryRow(ctx, d, args{
		"name": sch.Name, "schedule_id": pgUUID(id), "namespace": sch.Namespace, "template": sch.Template,
		"version": sch.Version, "cron": sch.Cron, "time_zone": sch.TimeZone, "context": string(sch.Context),
		"priority": sch.Priority, "overlap": string(sch.Overlap), "catch_up": string(sch.CatchUp),
		"catch_up_limit": sch.CatchUpLimit, "source": source, "next_fire_at": next, "replace": replace,
	}).Scan(&created)
	if errors.Is(translate(err), ErrNotFound) {
		// Nothing written: the schedule exists and is left as it is.
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("writing schedule %s: %w", sch.Name, translate(err))
	}
	return true, created, nil
}

// SchedulesDeclared is what declaring a configuration's schedules did.
type SchedulesDeclared struct {
	// Created and Changed name the schedules written.
	Created, Changed []string
	// Taken names declared schedules left alone because a schedule of that
	// name was created through the API.
	Taken []string
	// Undeclared names the schedules an earlier configuration declared and
	// this one does not: they keep firing until deleted.
	Undeclared []string
}

// SchedulesDeclare writes the schedules of a node's configuration: a new
// one is created, a changed one rewritten (a changed cron expression or
// zone fires next at its first time after now), an unchanged one left
// alone, and a paused one stays paused. Every schedule is checked first;
// one that is wrong refuses them all, naming it and the field.
func (s *Store) SchedulesDeclare(ctx context.Context, schs []workflow.Schedule) (SchedulesDeclared, error) {
	var out SchedulesDeclared
	seen := map[string]bool{}
	for i := range schs {
		if err := schs[i].Normalize(); err != nil {
			return out, scheduleError("declare schedules", err)
		}
		if seen[schs[i].Name] {
			return out, &RefusedError{Action: "declare schedules", Reason: fmt.Sprintf("schedule %q is declared twice", schs[i].Name)}
		}
		seen[schs[i].Name] = true
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = SchedulesDeclared{}
		for _, sch := range schs {
			var source string
			err := stmt("schedule_source").queryRow(ctx, tx, args{"name": sch.Name}).Scan(&source)
			if err != nil && !errors.Is(translate(err), ErrNotFound) {
				return fmt.Errorf("reading schedule %s: %w", sch.Name, translate(err))
			}
			if err == nil && source != ScheduleSourceConfig {
				out.Taken = append(out.Taken, sch.Name)
				continue
			}
			written, created, err := s.scheduleUpsert(ctx, tx, sch, ScheduleSourceConfig, true)
			if err != nil {
				return err
			}
			switch {
			case created:
				out.Created = append(out.Created, sch.Name)
			case written:
				out.Changed = append(out.Changed, sch.Name)
			}
		}
		rows, err := stmt("schedule_names_by_source").query(ctx, tx, args{"source": ScheduleSourceConfig})
		if err != nil {
			return fmt.Errorf("listing declared schedules: %w", translate(err))
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("listing declared schedules: %w", translate(err))
		}
		for _, n := range names {
			if !seen[n] {
				out.Undeclared = append(out.Undeclared, n)
			}
		}
		return nil
	})
	return out, err
}

// ScheduleList returns every schedule, by name.
func (s *Store) ScheduleList(ctx context.Context) ([]ScheduleInfo, error) {
	return s.scheduleList(ctx, nil)
}

// ScheduleGet returns one schedule.
func (s *Store) ScheduleGet(ctx context.Context, name string) (ScheduleInfo, error) {
	l, err := s.scheduleList(ctx, &name)
	if err != nil {
		return ScheduleInfo{}, err
	}
	if len(l) == 0 {
		return ScheduleInfo{}, fmt.Errorf("schedule %q: %w", name, ErrNotFound)
	}
	return l[0], nil
}

func (s *Store) scheduleList(ctx context.Context, name *string) ([]ScheduleInfo, error) {
	rows, err := stmt("schedule_list").query(ctx, s.pool, args{"name": name})
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ScheduleInfo, error) {
		var (
			si                ScheduleInfo
			ctxText           []byte
			overlap, catchUp  string
			lastReq, lastTask *[16]byte
			lastState         *string
		)
		err := r.Scan(&si.Name, scanUUID(&si.ID), &si.Namespace, &si.Template, &si.Version, &si.Cron, &si.TimeZone,
			&ctxText, &si.Priority, &overlap, &catchUp, &si.CatchUpLimit, &si.Source, &si.Paused, &si.NextFireAt,
			&si.LastFireAt, &lastReq, &lastTask, &lastState, &si.Fired, &si.Skipped, &si.Missed, &si.CreatedAt, &si.UpdatedAt)
		if err != nil {
			return si, err
		}
		si.Context = json.RawMessage(ctxText)
		si.Overlap, si.CatchUp = workflow.OverlapPolicy(overlap), workflow.CatchUpPolicy(catchUp)
		if lastReq != nil {
			id := uuid.UUID(*lastReq)
			si.LastRequestID = &id
		}
		if lastTask != nil && lastState != nil {
			si.LastTask = &ScheduleTask{TaskUUID: uuid.UUID(*lastTask), State: workflow.TaskState(*lastState)}
		}
		if !si.Paused {
			t := si.NextFireAt
			si.NextFires = append(si.NextFires, t)
			for len(si.NextFires) < ScheduleNextFires {
				n, err := si.Next(t)
				if err != nil {
					break
				}
				si.NextFires, t = append(si.NextFires, n), n
			}
		}
		return si, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", translate(err))
	}
	return out, nil
}

// SchedulePause pauses a schedule (paused) or resumes it. A resumed
// schedule fires next at its first fire time after now: what fell due
// while it was paused is not sent.
func (s *Store) SchedulePause(ctx context.Context, name string, paused bool) (ScheduleInfo, error) {
	cur, err := s.ScheduleGet(ctx, name)
	if err != nil {
		return ScheduleInfo{}, err
	}
	next, err := cur.Next(s.now())
	if err != nil {
		return ScheduleInfo{}, err
	}
	tag, err := stmt("schedule_pause").exec(ctx, s.pool, args{"name": name, "paused": paused, "next_fire_at": next})
	if err != nil {
		return ScheduleInfo{}, fmt.Errorf("pausing schedule %s: %w", name, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return ScheduleInfo{}, fmt.Errorf("schedule %q: %w", name, ErrNotFound)
	}
	return s.ScheduleGet(ctx, name)
}

// ScheduleDelete deletes a schedule and its fire history; the tasks its
// fires created stay.
func (s *Store) ScheduleDelete(ctx context.Context, name string) error {
	tag, err := stmt("schedule_delete").exec(ctx, s.pool, args{"name": name})
	if err != nil {
		return fmt.Errorf("deleting schedule %s: %w", name, translate(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("schedule %q: %w", name, ErrNotFound)
	}
	return nil
}

// ScheduleTrigger sends one fire of a schedule now, whatever its cron
// expression, its overlap policy or its pause say; its next fire time is
// unchanged.
func (s *Store) ScheduleTrigger(ctx context.Context, name string) (ScheduleFire, error) {
	var f ScheduleFire
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var (
			sch     workflow.Schedule
			id      uuid.UUID
			ctxText []byte
			lastReq *[16]byte
		)
		err := stmt("schedule_lock").queryRow(ctx, tx, args{"name": name}).Scan(scanUUID(&id), &sch.Namespace,
			&sch.Template, &sch.Version, &ctxText, &sch.Priority, &lastReq)
		if errors.Is(translate(err), ErrNotFound) {
			return fmt.Errorf("schedule %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading schedule %s: %w", name, translate(err))
		}
		sch.Name, sch.Context = name, ctxText
		at := s.now().UTC().Truncate(time.Microsecond)
		req, err := s.fireSend(ctx, tx, sch, id, workflow.Fire{At: at, Kind: workflow.FireTriggered})
		if err != nil {
			return err
		}
		if err := s.fireRecord(ctx, tx, name, at, string(workflow.FireTriggered), &req, 1, nil, "triggered by an operator"); err != nil {
			return err
		}
		_, err = stmt("schedule_fired").exec(ctx, tx, args{"name": name, "next_fire_at": nil, "last_fire_at": at,
			"last_request_id": pgUUID(req), "fired": 1, "skipped": 0, "missed": 0})
		if err != nil {
			return fmt.Errorf("recording the fire of schedule %s: %w", name, translate(err))
		}
		f = ScheduleFire{FireAt: at, Outcome: string(workflow.FireTriggered), RequestID: &req, Count: 1, Reason: "triggered by an operator", NodeID: s.nodeID}
		return nil
	})
	return f, err
}

// ScheduleFires returns a schedule's latest fires, newest first.
func (s *Store) ScheduleFires(ctx context.Context, name string, limit int) ([]ScheduleFire, error) {
	if _, err := s.ScheduleGet(ctx, name); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 50
	}
	rows, err := stmt("schedule_fires").query(ctx, s.pool, args{"schedule": name, "limit": limit})
	if err != nil {
		return nil, fmt.Errorf("listing the fires of schedule %s: %w", name, translate(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ScheduleFire, error) {
		var (
			f         ScheduleFire
			req, task *[16]byte
			state     *string
		)
		if err := r.Scan(&f.FireAt, &f.Outcome, &req, &task, &state, &f.Count, &f.LastFireAt, &f.Reason, &f.NodeID, &f.CreatedAt); err != nil {
			return f, err
		}
		if req != nil {
			id := uuid.UUID(*req)
			f.RequestID = &id
		}
		if task != nil && state != nil {
			f.Task = &ScheduleTask{TaskUUID: uuid.UUID(*task), State: workflow.TaskState(*state)}
		}
		return f, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the fires of schedule %s: %w", name, translate(err))
	}
	return out, nil
}

// FireReport is what one check of the schedules did.
type FireReport struct {
	// Schedules is how many due schedules the check held.
	Schedules int
	// Sent, Skipped and Missed count fire times.
	Sent, Skipped, Missed int
	// Next is the soonest fire time of any schedule not paused after the
	// check; zero when there is none.
	Next time.Time
	// More is set when more schedules were due than one check holds.
	More bool
}

// SchedulesFireDue checks the schedules due now (by the store's clock):
// for each, in one transaction with the others held, it sends the fires
// the schedule's catch-up and overlap policies let through, records the
// skipped and missed ones, and moves its next fire time on. A schedule
// another node is checking is left to it.
func (s *Store) SchedulesFireDue(ctx context.Context) (FireReport, error) {
	var rep FireReport
	now := s.now()
	// A check with nothing due reads one row and opens no transaction.
	next, err := s.schedulesNext(ctx)
	if err != nil || next.IsZero() || next.After(now) {
		return FireReport{Next: next}, err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		rep = FireReport{}
		rows, err := stmt("schedules_due").query(ctx, tx, args{"now": now, "limit": schedulesDueBatch})
		if err != nil {
			return fmt.Errorf("reading due schedules: %w", translate(err))
		}
		due, err := pgx.CollectRows(rows, scanDueSchedule)
		if err != nil {
			return fmt.Errorf("reading due schedules: %w", translate(err))
		}
		rep.Schedules, rep.More = len(due), len(due) == schedulesDueBatch
		for _, d := range due {
			if err := s.scheduleFire(ctx, tx, d, now, &rep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Next, err = s.schedulesNext(ctx)
	return rep, err
}

// schedulesNext is the soonest fire time of any schedule not paused; zero
// when there is none.
func (s *Store) schedulesNext(ctx context.Context) (time.Time, error) {
	var next *time.Time
	if err := stmt("schedules_next").queryRow(ctx, s.pool, args{}).Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("reading the next fire time: %w", translate(err))
	}
	if next == nil {
		return time.Time{}, nil
	}
	return *next, nil
}

// dueSchedule is a due schedule's row with its previous fire's task.
type dueSchedule struct {
	sch      workflow.Schedule
	id       uuid.UUID
	next     time.Time
	lastReq  *uuid.UUID
	lastTask *ScheduleTask
	// lastRejected is set when the previous fire's request was rejected.
	lastRejected bool
}

func scanDueSchedule(r pgx.CollectableRow) (dueSchedule, error) {
	var (
		d                 dueSchedule
		ctxText           []byte
		overlap, catchUp  string
		lastReq, lastTask *[16]byte
		lastState         *string
	)
	err := r.Scan(&d.sch.Name, scanUUID(&d.id), &d.sch.Namespace, &d.sch.Template, &d.sch.Version, &d.sch.Cron,
		&d.sch.TimeZone, &ctxText, &d.sch.Priority, &overlap, &catchUp, &d.sch.CatchUpLimit, &d.next,
		&lastReq, &lastTask, &lastState, &d.lastRejected)
	if err != nil {
		return d, err
	}
	d.sch.Context = ctxText
	d.sch.Overlap, d.sch.CatchUp = workflow.OverlapPolicy(overlap), workflow.CatchUpPolicy(catchUp)
	if lastReq != nil {
		id := uuid.UUID(*lastReq)
		d.lastReq = &id
	}
	if lastTask != nil && lastState != nil {
		d.lastTask = &ScheduleTask{TaskUUID: uuid.UUID(*lastTask), State: workflow.TaskState(*lastState)}
	}
	return d, nil
}

// scheduleFire sends what one due schedule's check lets through.
func (s *Store) scheduleFire(ctx context.Context, tx pgx.Tx, d dueSchedule, now time.Time, rep *FireReport) error {
	due, err := d.sch.Check(d.next, now)
	if err != nil {
		return fmt.Errorf("schedule %s: %w", d.sch.Name, err)
	}
	var (
		sent, skipped int
		lastAt        *time.Time
		lastReq       *[16]byte
	)
	if m := due.Missed; m.Count > 0 {
		count := fmt.Sprintf("%d fire times", m.Count)
		if m.AtLeast {
			count = fmt.Sprintf("at least %d fire times", m.Count)
		}
		reason := fmt.Sprintf("%s from %s to %s were due while no node checked the schedule (catch_up = %s, catch_up_limit = %d)",
			count, m.First.UTC().Format(time.RFC3339), m.Last.UTC().Format(time.RFC3339), d.sch.CatchUp, d.sch.CatchUpLimit)
		last := m.Last
		if err := s.fireRecord(ctx, tx, d.sch.Name, m.First, FireMissed, nil, m.Count, &last, reason); err != nil {
			return err
		}
	}
	// running tells the overlap policy whether the previous fire's task
	// has not finished; a fire sent by this check counts as running.
	running := func() (bool, string) {
		switch {
		case d.lastReq == nil:
			return false, ""
		case d.lastTask != nil:
			return !d.lastTask.State.Terminal(), fmt.Sprintf("task %s of the previous fire is %s", d.lastTask.TaskUUID, d.lastTask.State)
		case d.lastRejected:
			return false, ""
		}
		return true, fmt.Sprintf("the previous fire's request %s has not become a task yet", *d.lastReq)
	}
	for _, f := range due.Fires {
		if busy, why := running(); busy {
			switch d.sch.Overlap {
			case workflow.OverlapSkip:
				if err := s.fireRecord(ctx, tx, d.sch.Name, f.At, FireSkipped, nil, 1, nil, why+" (overlap = skip)"); err != nil {
					return err
				}
				skipped++
				continue
			case workflow.OverlapCancelPrevious:
				if d.lastTask != nil {
					reason := fmt.Sprintf("cancelled by the fire of schedule %s at %s (overlap = cancel_previous)", d.sch.Name, f.At.UTC().Format(time.RFC3339))
					if err := s.taskCancel(ctx, tx, d.lastTask.TaskUUID, reason); err != nil && !isRefused(err) {
						return fmt.Errorf("schedule %s: %w", d.sch.Name, err)
					}
				}
			}
		}
		req, err := s.fireSend(ctx, tx, d.sch, d.id, f)
		if err != nil {
			return err
		}
		if err := s.fireRecord(ctx, tx, d.sch.Name, f.At, string(f.Kind), &req, 1, nil, ""); err != nil {
			return err
		}
		at := f.At
		id := req
		lastAt, lastReq = &at, (*[16]byte)(&id)
		d.lastReq, d.lastTask, d.lastRejected = &id, nil, false
		sent++
	}
	_, err = stmt("schedule_fired").exec(ctx, tx, args{"name": d.sch.Name, "next_fire_at": due.Next,
		"last_fire_at": lastAt, "last_request_id": lastReq, "fired": sent, "skipped": skipped, "missed": due.Missed.Count})
	if err != nil {
		return fmt.Errorf("moving schedule %s on: %w", d.sch.Name, translate(err))
	}
	rep.Sent += sent
	rep.Skipped += skipped
	rep.Missed += due.Missed.Count
	return nil
}

func isRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// fireSend sends a fire's task request on the request queue, through the
// same path as any client's; it returns the request id.
func (s *Store) fireSend(ctx context.Context, tx pgx.Tx, sch workflow.Schedule, id uuid.UUID, f workflow.Fire) (uuid.UUID, error) {
	reqID := workflow.FireRequestID(id, f.At, f.Kind)
	body, err := queue.TaskRequest{
		RequestID: reqID, Namespace: sch.Namespace, Name: sch.Template, Version: sch.Version,
		Context: string(sch.Context), Priority: sch.Priority, RequestedBy: "schedule:" + sch.Name,
	}.Encode()
	if err != nil {
		return uuid.Nil, fmt.Errorf("schedule %s: encoding its request: %w", sch.Name, err)
	}
	headers, err := json.Marshal(map[string]string{"schedule": sch.Name, "fire_at": f.At.UTC().Format(time.RFC3339Nano), "fire": string(f.Kind)})
	if err != nil {
		return uuid.Nil, err
	}
	st, err := stmt("task_request_send").forQueues("requests", queue.TaskRequestsQueue)
	if err != nil {
		return uuid.Nil, err
	}
	var (
		msgID int64
		woke  string
	)
	err = st.queryRow(ctx, tx, args{"message": string(body), "headers": string(headers),
		"wake_channel": WakeChannel, "wake_queue": queue.TaskRequestsQueue}).Scan(&msgID, &woke)
	if err != nil {
		return uuid.Nil, fmt.Errorf("schedule %s: sending its request: %w", sch.Name, translate(err))
	}
	return reqID, nil
}

func (s *Store) fireRecord(ctx context.Context, tx pgx.Tx, name string, at time.Time, outcome string, req *uuid.UUID, count int, last *time.Time, reason string) error {
	var reqArg *[16]byte
	if req != nil {
		reqArg = (*[16]byte)(req)
	}
	_, err := stmt("schedule_fire_insert").exec(ctx, tx, args{"schedule": name, "fire_at": at, "outcome": outcome,
		"request_id": reqArg, "count": count, "last_fire_at": last, "reason": strings.TrimSpace(reason), "node_id": s.nodeID})
	if err != nil {
		return fmt.Errorf("recording a fire of schedule %s: %w", name, translate(err))
	}
	return nil
}
