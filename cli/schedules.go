package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/bootstrap"
	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// The schedule commands and prune: through api.Operator, as the HTTP API.

func runSchedulesList(in *invocation, args []string) error {
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Schedules(ctx)
		if err != nil {
			return err
		}
		return in.output(page, func() error { return writeSchedules(in.stdout, page.Schedules) })
	})
}

func runScheduleCreate(in *invocation, args []string) error {
	var (
		s       workflow.Schedule
		ctxArg  = in.fs.String("context", "{}", "each task's context: a JSON object, or @FILE to read it from a file")
		overlap = in.fs.String("overlap", "", "while the previous fire's task runs: skip (default), allow or cancel_previous")
		catchUp = in.fs.String("catch-up", "", "fires missed while no node ran: none, one (default) or all")
	)
	in.fs.StringVar(&s.Namespace, "namespace", "", "template namespace (required)")
	in.fs.StringVar(&s.Template, "template", "", "template name (required)")
	in.fs.StringVar(&s.Version, "version", "", "template version; the newest when empty")
	in.fs.StringVar(&s.Cron, "cron", "", `cron expression (required): 5 fields, 6 with seconds first, or "@every 30s"`)
	in.fs.StringVar(&s.TimeZone, "time-zone", "UTC", "IANA time zone the expression is read in")
	in.fs.IntVar(&s.Priority, "priority", 0, "each request's priority")
	in.fs.IntVar(&s.CatchUpLimit, "catch-up-limit", workflow.CatchUpLimitDefault, "with --catch-up all: at most this many missed fires")
	name, err := in.parse(args)
	if err != nil {
		return err
	}
	s.Name, s.Overlap, s.CatchUp = name, workflow.OverlapPolicy(*overlap), workflow.CatchUpPolicy(*catchUp)
	text := *ctxArg
	if strings.HasPrefix(text, "@") {
		b, err := os.ReadFile(text[1:])
		if err != nil {
			return fmt.Errorf("--context: %w", err)
		}
		text = string(b)
	}
	s.Context = []byte(text)
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		si, err := op.CreateSchedule(ctx, s)
		if err != nil {
			return usageError(err)
		}
		return in.output(si, func() error { return writeSchedule(in.stdout, api.ScheduleDetail{ScheduleInfo: si}) })
	})
}

// runScheduleAction runs schedules show, pause, resume, trigger and delete.
func runScheduleAction(in *invocation, args []string) error {
	arg, err := in.parse(args)
	if err != nil {
		return err
	}
	name, err := api.ParseScheduleName(arg)
	if err != nil {
		return usageError(err)
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		switch in.cmd.name {
		case "schedules show":
			d, err := op.Schedule(ctx, name)
			if err != nil {
				return err
			}
			return in.output(d, func() error { return writeSchedule(in.stdout, d) })
		case "schedules pause", "schedules resume":
			si, err := op.PauseSchedule(ctx, name, in.cmd.name == "schedules pause")
			if err != nil {
				return err
			}
			return in.output(si, func() error { return writeSchedule(in.stdout, api.ScheduleDetail{ScheduleInfo: si}) })
		case "schedules trigger":
			f, err := op.TriggerSchedule(ctx, name)
			if err != nil {
				return err
			}
			return in.output(f, func() error {
				_, err := fmt.Fprintf(in.stdout, "schedule %s fired at %s: request %s\n", name, f.FireAt.Local().Format(timeLayout), *f.RequestID)
				return err
			})
		default: // schedules delete
			res, err := op.DeleteSchedule(ctx, name)
			if err != nil {
				return err
			}
			return in.output(res, func() error {
				_, err := fmt.Fprintf(in.stdout, "schedule %s deleted; the tasks it started stay\n", name)
				return err
			})
		}
	})
}

func writeSchedules(w io.Writer, l []store.ScheduleInfo) error {
	if len(l) == 0 {
		_, err := fmt.Fprintln(w, "no schedules")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tTEMPLATE\tCRON\tZONE\tSTATE\tNEXT FIRE\tLAST TASK\tFIRED\tSKIPPED\tMISSED\tSOURCE")
	for _, s := range l {
		state, next := "active", s.NextFireAt.Local().Format(timeLayout)
		if s.Paused {
			state, next = "paused", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", s.Name, templateRef(s.Schedule), s.Cron, s.TimeZone,
			state, next, lastTask(s), s.Fired, s.Skipped, s.Missed, s.Source)
	}
	return tw.Flush()
}

func templateRef(s workflow.Schedule) string {
	ref := s.Namespace + "/" + s.Template
	if s.Version != "" {
		ref += "@" + s.Version
	}
	return ref
}

func lastTask(s store.ScheduleInfo) string {
	switch {
	case s.LastTask != nil:
		return s.LastTask.TaskUUID.String() + " (" + string(s.LastTask.State) + ")"
	case s.LastRequestID != nil:
		return "request " + s.LastRequestID.String() + " (not a task yet)"
	}
	return "-"
}

func writeSchedule(w io.Writer, d api.ScheduleDetail) error {
	s := d.ScheduleInfo
	state := "active"
	if s.Paused {
		state = "paused"
	}
	fmt.Fprintf(w, "schedule %s (%s, %s)\n", s.Name, state, s.Source)
	fmt.Fprintf(w, "  template   %s\n", templateRef(s.Schedule))
	fmt.Fprintf(w, "  cron       %s (%s)\n", s.Cron, s.TimeZone)
	fmt.Fprintf(w, "  policies   overlap %s, catch_up %s (limit %d)\n", s.Overlap, s.CatchUp, s.CatchUpLimit)
	fmt.Fprintf(w, "  context    %s\n", oneLine(compactJSON(s.Context), 100))
	for i, t := range s.NextFires {
		label := "           "
		if i == 0 {
			label = "  next     "
		}
		fmt.Fprintf(w, "%s %s\n", label, t.Local().Format(timeLayout))
	}
	fmt.Fprintf(w, "  last task  %s\n", lastTask(s))
	fmt.Fprintf(w, "  counts     fired %d, skipped %d, missed %d\n", s.Fired, s.Skipped, s.Missed)
	if len(d.Fires) == 0 {
		return nil
	}
	fmt.Fprintln(w, "fires, newest first:")
	tw := newTable(w)
	fmt.Fprintln(tw, "  FIRE AT\tOUTCOME\tTASK\tNODE\tREASON")
	for _, f := range d.Fires {
		task := "-"
		switch {
		case f.Task != nil:
			task = f.Task.TaskUUID.String() + " (" + string(f.Task.State) + ")"
		case f.RequestID != nil:
			task = "request " + f.RequestID.String()
		}
		outcome := f.Outcome
		if f.Count > 1 {
			outcome = fmt.Sprintf("%s ×%d", outcome, f.Count)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", f.FireAt.Local().Format(timeLayout), outcome, task, f.NodeID, oneLine(f.Reason, 100))
	}
	return tw.Flush()
}

// pruneHolder is the lease holder of a prune run from the command line.
func pruneHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("cli:%s:%d", host, os.Getpid())
}

func runPrune(in *invocation, args []string) error {
	dryRun := in.fs.Bool("dry-run", false, "count what would be deleted, deleting nothing")
	if _, err := in.parse(args); err != nil {
		return err
	}
	cfg, err := in.config()
	if err != nil {
		return err
	}
	policy := bootstrap.RetentionPolicy(cfg.Retention)
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		tmpls, err := op.Templates(ctx)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		var namespaces []string
		for _, t := range tmpls.Templates {
			if !seen[t.Namespace] {
				seen[t.Namespace] = true
				namespaces = append(namespaces, t.Namespace)
			}
		}
		queues := bootstrap.RetentionQueues(namespaces)
		if *dryRun {
			plan, err := op.PrunePlan(ctx, policy, queues)
			if err != nil {
				return err
			}
			return in.output(plan, func() error { return writePrunePlan(in.stdout, plan) })
		}
		run, err := op.PruneNow(ctx, policy, queues, cfg.Retention.BatchSize, pruneHolder())
		if err != nil {
			return err
		}
		return in.output(run, func() error {
			if len(run.Deleted) == 0 {
				_, err := fmt.Fprintln(in.stdout, "nothing to delete")
				return err
			}
			tw := newTable(in.stdout)
			fmt.Fprintln(tw, "TARGET\tROWS\tSTEPS\tTRANSITIONS")
			for label, c := range run.Deleted {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", label, c.Rows, c.Steps, c.Transitions)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err := fmt.Fprintf(in.stdout, "deleted in %d batches\n", run.Batches)
			return err
		})
	})
}

func writePrunePlan(w io.Writer, plan []api.PrunePreview) error {
	if len(plan) == 0 {
		_, err := fmt.Fprintln(w, "retention keeps everything (every period is 0)")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TARGET\tOLDER THAN\tROWS\tSTEPS\tTRANSITIONS")
	for _, p := range plan {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", p.Target, p.Cutoff.Local().Format(timeLayout), p.Count.Rows, p.Count.Steps, p.Count.Transitions)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "dry run: nothing was deleted")
	return err
}
