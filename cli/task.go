package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasker-run/tasker/api"
)

// The operator commands: they go through api.Operator, as the HTTP API
// does, and print its bodies with --json.

func runTaskList(in *invocation, args []string) error {
	var f api.TaskFilter
	in.fs.StringVar(&f.State, "state", "", "keep tasks in this state")
	in.fs.StringVar(&f.Namespace, "namespace", "", "keep tasks of this namespace")
	in.fs.StringVar(&f.Name, "name", "", "keep tasks of this template name")
	in.fs.StringVar(&f.Since, "since", "", `keep tasks created within this age ("90m", "24h", "7d")`)
	in.fs.StringVar(&f.Search, "search", "", "keep the tasks whose task uuid, request id or correlation id begins with this (8 or more hex digits)")
	in.fs.IntVar(&f.Limit, "limit", api.ListLimitDefault, "at most this many tasks")
	in.fs.StringVar(&f.Before, "before", "", "tasks older than this cursor (the next_cursor of the previous page)")
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Tasks(ctx, f)
		if err != nil {
			return usageError(err)
		}
		return in.output(page, func() error {
			if err := writeTaskList(in.stdout, page.Tasks, time.Now()); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(in.stdout, "more: tasker task list --before %s\n", page.NextCursor)
			}
			return nil
		})
	})
}

// runTaskAction runs task show, retry, cancel and resolve; each declares
// only its own flags.
func runTaskAction(in *invocation, args []string) error {
	var (
		history              bool
		reason, step, result string
	)
	switch in.cmd.name {
	case "task show":
		in.fs.BoolVar(&history, "history", false, "add every step transition to the history")
	case "task cancel":
		in.fs.StringVar(&reason, "reason", "", "why, recorded with the transitions")
	case "task resolve":
		in.fs.StringVar(&step, "step", "", "the failed step to resolve; without it the whole task is resolved")
		in.fs.StringVar(&result, "result", "", "with --step: the step's result (JSON), passed to the steps that depend on it")
	}
	arg, err := in.parse(args)
	if err != nil {
		return err
	}
	id, err := api.ParseTaskID(arg)
	if err != nil {
		return usageError(err)
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		var (
			res api.ActionResult
			err error
		)
		switch in.cmd.name {
		case "task show":
			d, err := op.Task(ctx, id)
			if err != nil {
				return err
			}
			return in.output(d, func() error {
				return writeTaskDetail(in.stdout, d, detailOptions{StepHistory: history})
			})
		case "task retry":
			res, err = op.Retry(ctx, id)
		case "task cancel":
			res, err = op.Cancel(ctx, id, reason)
		case "task resolve":
			res, err = op.Resolve(ctx, id, step, json.RawMessage(result))
		}
		if err != nil {
			return usageError(err)
		}
		return in.output(res, func() error { return writeAction(in.stdout, res) })
	})
}

func runTemplates(in *invocation, args []string) error {
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Templates(ctx)
		if err != nil {
			return err
		}
		return in.output(page, func() error { return writeTemplates(in.stdout, page.Templates) })
	})
}

func runRejected(in *invocation, args []string) error {
	limit := in.fs.Int("limit", api.ListLimitDefault, "at most this many requests")
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Rejected(ctx, *limit)
		if err != nil {
			return usageError(err)
		}
		return in.output(page, func() error { return writeRejected(in.stdout, page.Rejected) })
	})
}

func runReplay(in *invocation, args []string) error {
	arg, err := in.parse(args)
	if err != nil {
		return err
	}
	id, err := api.ParseMsgID(arg)
	if err != nil {
		return usageError(err)
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		rr, err := op.Replay(ctx, id)
		if err != nil {
			return err
		}
		return in.output(rr, func() error { return writeReplayed(in.stdout, rr) })
	})
}

func runArchived(in *invocation, args []string) error {
	var f api.ArchivedFilter
	in.fs.StringVar(&f.Queue, "queue", "", "the queue whose archive to list (required)")
	in.fs.IntVar(&f.Limit, "limit", api.ListLimitDefault, "at most this many messages")
	in.fs.StringVar(&f.Before, "before", "", "messages older than this cursor (the next_cursor of the previous page)")
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Archived(ctx, f)
		if err != nil {
			return usageError(err)
		}
		return in.output(page, func() error {
			if err := writeArchived(in.stdout, page.Messages); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(in.stdout, "more: tasker messages archived --queue %s --before %s\n", f.Queue, page.NextCursor)
			}
			return nil
		})
	})
}
