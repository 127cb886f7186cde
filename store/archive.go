package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/queue"
)

// ArchivedMessage is a message moved to a queue's archive, with the reason.
type ArchivedMessage struct {
	Queue string `json:"queue"`
	MsgID int64  `json:"msg_id"`
	// Reason is why the message was archived. Inferred is set when no
	// reason was kept with it (archived by a component that does not record
	// one, or before reasons were kept) and Reason is what its body tells.
	Reason     string    `json:"reason"`
	Inferred   bool      `json:"inferred,omitempty"`
	ArchivedBy string    `json:"archived_by,omitempty"`
	ReadCount  int       `json:"read_count"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	ArchivedAt time.Time `json:"archived_at"`
	// Message is the body, cut at ArchivedMessageChars characters.
	Message string `json:"message"`
}

// ArchivedMessageChars is how much of an archived body a list row carries.
const ArchivedMessageChars = 1024

// ArchivedParams select ArchivedList's page.
type ArchivedParams struct {
	Queue string
	// Before keeps messages older than this message id (a cursor: the last
	// message of the previous page); 0 does not filter.
	Before int64
	// Limit defaults to 50.
	Limit int
}

// ArchivedList returns the archived messages of a queue, newest first,
// each with the reason it was archived.
func (s *Store) ArchivedList(ctx context.Context, p ArchivedParams) ([]ArchivedMessage, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	st, err := stmt("archived_list").forQueues("queue", p.Queue)
	if err != nil {
		return nil, err
	}
	var before *int64
	if p.Before > 0 {
		before = &p.Before
	}
	rows, err := st.query(ctx, s.pool, args{
		"before": before, "limit": p.Limit, "requests": p.Queue == queue.TaskRequestsQueue,
		"message_chars": ArchivedMessageChars, "whole_bytes": 64 << 10,
	})
	if err != nil {
		return nil, archivedError(p.Queue, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ArchivedMessage, error) {
		m := ArchivedMessage{Queue: p.Queue}
		var (
			reason *string
			whole  []byte
		)
		if err := r.Scan(&m.MsgID, &m.ReadCount, &m.EnqueuedAt, &m.ArchivedAt, &reason, &m.ArchivedBy, &m.Message, &whole); err != nil {
			return m, err
		}
		if reason != nil {
			m.Reason = *reason
		} else {
			m.Reason, m.Inferred = inferArchiveReason(p.Queue, whole), true
		}
		return m, nil
	})
	if err != nil {
		return nil, archivedError(p.Queue, err)
	}
	return out, nil
}

func archivedError(queueName string, err error) error {
	if undefinedTable(err) {
		return fmt.Errorf("queue %s: %w", queueName, ErrNotFound)
	}
	return fmt.Errorf("listing the archive of %s: %w", queueName, err)
}

// inferArchiveReason tells, from its body, why a message without a kept
// reason was archived: the consumers archive what does not decode.
func inferArchiveReason(queueName string, body []byte) string {
	if body == nil {
		return "no reason recorded"
	}
	var err error
	switch queueName {
	case queue.TaskRequestsQueue:
		_, err = queue.DecodeTaskRequest(body)
	case queue.StepResultsQueue:
		_, err = queue.DecodeStepResult(body)
	default:
		_, err = queue.DecodeStepMessage(body)
	}
	if err != nil {
		return "does not decode: " + err.Error()
	}
	return "no reason recorded"
}
