package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tasker-run/tasker/api"
)

// tasker limits: the flow limits and their use, through api.Operator, as
// GET /v1/limits.

func runLimits(in *invocation, args []string) error {
	limit := in.fs.Int("limit", api.ListLimitDefault, "at most this many groups, those with the most steps waiting first")
	if _, err := in.parse(args); err != nil {
		return err
	}
	return in.withOperator(func(ctx context.Context, op api.Operator) error {
		page, err := op.Limits(ctx, *limit)
		if err != nil {
			return usageError(err)
		}
		return in.output(page, func() error { return writeLimits(in.stdout, page, time.Now()) })
	})
}

// writeLimits writes the configured limits, each namespace's use and the
// groups' use, waits as ages relative to now.
func writeLimits(w io.Writer, p api.LimitsPage, now time.Time) error {
	if len(p.Namespaces)+len(p.Handlers) == 0 {
		fmt.Fprintln(w, "no namespace or handler limits configured (templates may declare their own)")
	} else {
		tw := newTable(w)
		fmt.Fprintln(tw, "LIMIT\tMAX IN FLIGHT\tRATE\tBURST\tRETRY-AFTER PAUSES")
		for _, l := range p.Namespaces {
			fmt.Fprintf(tw, "namespaces.%s\t%s\t%s\t%s\t%s\n", l.Name, orDash(l.MaxInFlight), cmp.Or(l.Rate, "-"), orDash(l.Burst),
				cmp.Or(l.RetryAfterPauses, "-"))
		}
		for _, l := range p.Handlers {
			fmt.Fprintf(tw, "flow.handlers.%s\t%s\t%s\t%s\t-\n", l.Name, orDash(l.MaxInFlight), cmp.Or(l.Rate, "-"), orDash(l.Burst))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "aging interval: %s\n", cmp.Or(p.AgingInterval, "-"))
	if len(p.Pauses) > 0 {
		fmt.Fprintf(w, "\npaused by Retry-After answers (%d of %d):\n", len(p.Pauses), p.PausesTotal)
		tw := newTable(w)
		fmt.Fprintln(tw, "GROUP\tFOR\tREASON")
		for _, ps := range p.Pauses {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", oneLine(ps.Group, 80), roundDuration(ps.Until.Sub(now)), oneLine(ps.Reason, 120))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(p.Usage) == 0 {
		_, err := fmt.Fprintln(w, "\nno step holds a slot or waits")
		return err
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "NAMESPACE\tIN USE\tWAITING\tOLDEST WAIT")
	for _, u := range p.Usage {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", u.Namespace, u.InUse, u.Waiting, waitAge(u.OldestWait, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\ngroups, most steps waiting first (%d of %d):\n", len(p.Groups), p.GroupsTotal)
	tw = newTable(w)
	fmt.Fprintln(tw, "GROUP\tNAMESPACE\tIN USE / MAX\tWAITING\tOLDEST WAIT\tRATE")
	for _, g := range p.Groups {
		rate := cmp.Or(g.Rate, "-")
		if g.Rate != "" && g.Burst > 1 {
			rate += " burst " + strconv.Itoa(g.Burst)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d / %s\t%d\t%s\t%s\n", oneLine(g.Group, 80), g.Namespace, g.InUse, orDash(g.MaxInFlight),
			g.Waiting, waitAge(g.OldestWait, now), rate)
	}
	return tw.Flush()
}

// waitAge is how long ago a wait began, or "-".
func waitAge(since *time.Time, now time.Time) string {
	if since == nil {
		return "-"
	}
	return roundDuration(now.Sub(*since))
}

// orDash writes n, or "-" for 0 (no limit).
func orDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}
