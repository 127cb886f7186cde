package workflow

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"100/s":   {Count: 100, Per: time.Second},
		"6/m":     {Count: 6, Per: time.Minute},
		"1/h":     {Count: 1, Per: time.Hour},
		"5/500ms": {Count: 5, Per: 500 * time.Millisecond},
		" 2 / s ": {Count: 2, Per: time.Second},
	} {
		got, err := ParseRate(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
		again, err := ParseRate(got.String())
		require.NoError(t, err)
		require.Equal(t, got, again, "String reads back")
	}
	require.Equal(t, 250*time.Millisecond, Rate{Count: 4, Per: time.Second}.Interval())
	for in, msg := range map[string]string{
		"100":       "is not <count>/<unit>",
		"0/s":       "at least 1",
		"-1/s":      "at least 1",
		"x/s":       "at least 1",
		"5/fort":    "the unit must be s, m, h or a positive duration",
		"5/-1s":     "the unit must be s, m, h or a positive duration",
		"2000000/s": "more than one token per microsecond",
	} {
		_, err := ParseRate(in)
		require.ErrorContains(t, err, msg, in)
		require.ErrorContains(t, err, in, "the error names the rate")
	}
}

func TestAdmitSlots(t *testing.T) {
	ns := Group{Name: "namespace:n", Limit: Limit{MaxInFlight: 3}}
	key := func(k string) Group { return Group{Name: "key:t=" + k, Limit: Limit{MaxInFlight: 1}} }
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
	}
	cands := []Candidate{
		{Step: ids[0], Groups: []Group{ns, key("a")}},
		{Step: ids[1], Groups: []Group{ns, key("a")}}, // a's slot is taken by ids[0]
		{Step: ids[2], Groups: []Group{ns, key("b")}},
		{Step: ids[3], Groups: []Group{ns, key("c")}}, // c holds one already
		{Step: ids[4], Groups: []Group{ns, key("d")}},
	}
	used := map[string]int{"key:t=c": 1}
	a := Admit(cands, used, nil, nil, time.Now(), time.Second)
	require.Equal(t, []Admitted{{Step: ids[0]}, {Step: ids[2]}, {Step: ids[4]}}, a.Admitted)
	require.Equal(t, []Held{
		{Step: ids[1], Group: "key:t=a", Reason: "key:t=a: all 1 slots in use"},
		{Step: ids[3], Group: "key:t=c", Reason: "key:t=c: all 1 slots in use"},
	}, a.Held)
	require.Equal(t, map[string]int{"key:t=c": 1}, used, "the caller's counts are left alone")
	a = Admit(cands[4:], map[string]int{"namespace:n": 3}, nil, nil, time.Now(), time.Second)
	require.Empty(t, a.Admitted)
	require.Equal(t, "namespace:n: all 3 slots in use", a.Held[0].Reason)
}

func TestAdmitRateIsAGenericCellRate(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	g := Group{Name: "namespace:n", Limit: Limit{Rate: Rate{Count: 4, Per: time.Second}, Burst: 2}}
	var cands []Candidate
	for range 10 {
		cands = append(cands, Candidate{Step: uuid.New(), Groups: []Group{g}})
	}
	a := Admit(cands, nil, nil, nil, now, time.Second)
	// Two at once (the burst), then one per 250 ms up to the horizon.
	var delays []time.Duration
	for _, ad := range a.Admitted {
		delays = append(delays, ad.Delay)
	}
	ms := time.Millisecond
	require.Equal(t, []time.Duration{0, 0, 250 * ms, 500 * ms, 750 * ms, 1000 * ms}, delays)
	require.Len(t, a.Held, 4)
	require.True(t, a.Held[0].Rated)
	require.Equal(t, "namespace:n: at its rate of 4/s", a.Held[0].Reason)
	// The next token is due 1.25 s from now, so the next admission that can
	// hand it out within the horizon is at 250 ms.
	require.Equal(t, now.Add(250*ms), a.Retry)
	require.Equal(t, now.Add(1500*ms), a.Buckets["namespace:n"])
	// At 100/s the next token would come within the horizon in 10 ms; the
	// next round waits a sixth of the horizon to book a run of tokens.
	fast := Group{Name: "namespace:f", Limit: Limit{Rate: Rate{Count: 100, Per: time.Second}, Burst: 1}}
	var many []Candidate
	for range 200 {
		many = append(many, Candidate{Step: uuid.New(), Groups: []Group{fast}})
	}
	f := Admit(many, nil, nil, nil, now, time.Second)
	require.Len(t, f.Admitted, 101)
	require.Equal(t, now.Add(time.Second/6), f.Retry)

	// Half a second later, from the bucket as it was left: two more.
	later := now.Add(500 * ms)
	b := Admit(cands[6:], nil, a.Buckets, nil, later, time.Second)
	require.Len(t, b.Admitted, 2)
	require.Equal(t, 750*ms, b.Admitted[0].Delay)
	require.Equal(t, 1000*ms, b.Admitted[1].Delay)

	// A bucket left idle refills to its burst, not beyond.
	c := Admit(cands, nil, a.Buckets, nil, now.Add(time.Hour), 0)
	require.Len(t, c.Admitted, 2)
}

func TestAdmitHeldBySlotsTakesNoToken(t *testing.T) {
	rated := Group{Name: "handler:h", Limit: Limit{Rate: Rate{Count: 1, Per: time.Second}}}
	full := Group{Name: "key:t=a", Limit: Limit{MaxInFlight: 1}}
	a := Admit([]Candidate{{Step: uuid.New(), Groups: []Group{rated, full}}, {Step: uuid.New(), Groups: []Group{rated}}},
		map[string]int{"key:t=a": 1}, nil, nil, time.Now(), 0)
	require.Len(t, a.Admitted, 1, "the second takes the token the first could not use")
	require.Zero(t, a.Admitted[0].Delay)
}

func TestEffectivePriority(t *testing.T) {
	require.Equal(t, 3, EffectivePriority(3, time.Hour, 0), "no aging")
	require.Equal(t, 3, EffectivePriority(3, 9*time.Second, 10*time.Second))
	require.Equal(t, 4, EffectivePriority(3, 10*time.Second, 10*time.Second))
	require.Equal(t, -2, EffectivePriority(-5, 30*time.Second, 10*time.Second))
}

func TestStepGroups(t *testing.T) {
	policy := FlowPolicy{
		Namespaces: map[string]Limit{"n": {MaxInFlight: 20}},
		Handlers:   map[string]Limit{"http": {Rate: Rate{Count: 10, Per: time.Second}}},
	}
	st := StepTemplate{Name: "charge", Handler: "http", Flow: StepFlow{
		Concurrency: 5, Key: "{{context.customer.id}}", KeyScope: "n/order", KeyLimit: Limit{MaxInFlight: 2},
	}}
	groups, key, err := StepGroups(policy, "n", "order", st, json.RawMessage(`{"customer": {"id": 42}}`))
	require.NoError(t, err)
	require.Equal(t, "key:n/order=42", key)
	require.Equal(t, []Group{
		{Name: "namespace:n", Limit: Limit{MaxInFlight: 20}},
		{Name: "handler:http", Limit: Limit{Rate: Rate{Count: 10, Per: time.Second}}},
		{Name: "step:n/order/charge", Limit: Limit{MaxInFlight: 5}},
		{Name: "key:n/order=42", Limit: Limit{MaxInFlight: 2}},
	}, groups)

	none, key, err := StepGroups(FlowPolicy{}, "n", "order", StepTemplate{Name: "x", Handler: "noop"}, nil)
	require.NoError(t, err)
	require.Empty(t, none)
	require.Empty(t, key)

	for ctx, msg := range map[string]string{
		`{}`:                       `step charge: concurrency_key "{{context.customer.id}}": placeholder {{context.customer.id}}: context has no key "customer"`,
		`{"customer": {"id": ""}}`: "renders empty",
		`{"customer": {"id": "` + strings.Repeat("x", 201) + `"}}`: "renders 201 bytes, more than 200",
	} {
		_, _, err := StepGroups(policy, "n", "order", st, json.RawMessage(ctx))
		require.ErrorContains(t, err, msg, ctx)
	}
	// A reload changes the limits of the configuration's groups.
	require.Equal(t, Limit{MaxInFlight: 7}, FlowPolicy{Namespaces: map[string]Limit{"n": {MaxInFlight: 7}}}.Current(Group{Name: "namespace:n", Limit: Limit{MaxInFlight: 20}}).Limit)
	require.Equal(t, Limit{}, FlowPolicy{}.Current(Group{Name: "handler:http", Limit: Limit{MaxInFlight: 20}}).Limit)
	require.Equal(t, Limit{MaxInFlight: 2}, FlowPolicy{}.Current(Group{Name: "key:n/order=42", Limit: Limit{MaxInFlight: 2}}).Limit)
}

func TestPlanTaskFlowThrottlesLimitedRoots(t *testing.T) {
	steps := []StepTemplate{
		{Name: "a", Flow: StepFlow{Concurrency: 1}},
		{Name: "b"},
		{Name: "c", DependsOn: []string{"a"}},
	}
	p, err := PlanTaskFlow(steps, TaskFlow{Namespace: "n", Template: "t"}, func() (uuid.UUID, error) { return uuid.New(), nil })
	require.NoError(t, err)
	require.Equal(t, StepStateThrottled, p.Steps[0].State)
	require.Equal(t, StepStateEnqueued, p.Steps[1].State)
	require.Equal(t, StepStatePending, p.Steps[2].State)
	require.Contains(t, p.StepMoves, StepMove{Step: 0, From: StepStatePending, To: StepStateThrottled, Reason: ReasonStepThrottled})
}

func TestTemplateFlowKeys(t *testing.T) {
	parse := func(head, step string) (*Template, error) {
		return ParseTemplate("t.toml", []byte(`namespace = "n"
name = "t"
version = "1.0.0"
`+head+`
[[steps]]
name = "a"
handler = "noop"
`+step+`
[[steps]]
name = "b"
handler = "noop"
`), nil)
	}
	tmpl, err := parse("concurrency_key = \"{{context.tenant}}\"\nmax_per_key = 3\nrate_per_key = \"10/s\"\nburst_per_key = 5\n", "concurrency = 2\n")
	require.NoError(t, err)
	want := StepFlow{Key: "{{context.tenant}}", KeyScope: "n/t",
		KeyLimit: Limit{MaxInFlight: 3, Rate: Rate{Count: 10, Per: time.Second}, Burst: 5}}
	require.Equal(t, StepFlow{Concurrency: 2, Key: want.Key, KeyScope: want.KeyScope, KeyLimit: want.KeyLimit}, tmpl.Steps[0].Flow)
	require.Equal(t, want, tmpl.Steps[1].Flow, "a step inherits its template's key")

	tmpl, err = parse("", "concurrency_key = \"{{context.region}}\"\nmax_per_key = 1\n")
	require.NoError(t, err)
	require.Equal(t, "n/t/a", tmpl.Steps[0].Flow.KeyScope, "a step's own key counts its own groups")
	require.True(t, tmpl.Steps[1].Flow.IsZero())

	for _, tc := range []struct{ head, step, msg string }{
		{"max_per_key = 2\n", "", "max_per_key and rate_per_key need a concurrency_key"},
		{"concurrency_key = \"{{context.x}}\"\n", "", `concurrency_key "{{context.x}}" needs max_per_key or rate_per_key`},
		{"concurrency_key = \"all\"\nmax_per_key = 1\n", "", "has no {{context...}} placeholder"},
		{"concurrency_key = \"{{context.x}}{{parents.a.y}}\"\nmax_per_key = 1\n", "", "only {{context...}} placeholders"},
		{"concurrency_key = \"{{context.x}}\"\nmax_per_key = 0\n", "", "max_per_key must be at least 1, got 0"},
		{"concurrency_key = \"{{context.x}}\"\nrate_per_key = \"fast\"\n", "", `rate_per_key: rate "fast" is not`},
		{"concurrency_key = \"{{context.x}}\"\nmax_per_key = 1\nburst_per_key = 2\n", "", "burst_per_key needs rate_per_key"},
		{"", "concurrency = 0\n", `step "a": concurrency must be at least 1, got 0`},
		{"", "max_per_key = 1\n", `step "a": max_per_key and rate_per_key need a concurrency_key`},
	} {
		_, err := parse(tc.head, tc.step)
		require.ErrorContains(t, err, tc.msg, tc.head+tc.step)
	}
}

func TestPolicyArraysLeaveSharedAndRatedGroupsToARound(t *testing.T) {
	p := FlowPolicy{
		Namespaces: map[string]Limit{"a": {MaxInFlight: 5}, "b": {Rate: Rate{Count: 1, Per: time.Second}}},
		Handlers:   map[string]Limit{"http": {MaxInFlight: 2}, "shell": {Rate: Rate{Count: 3, Per: time.Second}}},
	}
	names, maxes, byRound := p.Arrays()
	require.Equal(t, []string{"namespace:a", "namespace:b", "handler:http", "handler:shell"}, names)
	require.Equal(t, []int32{5, 0, 2, 0}, maxes)
	// A namespace's slots are its own; a handler's span namespaces, and a
	// rate's tokens are the round's.
	require.Equal(t, []bool{false, true, true, true}, byRound)
}

func TestStepGroupsForPauses(t *testing.T) {
	keyed := StepTemplate{Name: "charge", Handler: "http",
		Flow:   StepFlow{Key: "{{context.customer}}", KeyScope: "n/order", KeyLimit: Limit{MaxInFlight: 2}},
		Config: json.RawMessage(`{"url": "https://{{context.region}}.API.example.com/charge/{{parents.a.id}}"}`)}
	ctx := json.RawMessage(`{"customer": "c7", "region": "eu"}`)
	groups, _, err := StepGroups(FlowPolicy{}, "n", "order", keyed, ctx)
	require.NoError(t, err)
	require.Equal(t, []Group{{Name: "key:n/order=c7", Limit: Limit{MaxInFlight: 2}}}, groups)

	groups, _, err = StepGroups(FlowPolicy{Pauses: map[string]PauseScope{"n": PauseHost}}, "n", "order", keyed, ctx)
	require.NoError(t, err)
	require.Equal(t, []Group{{Name: "key:n/order=c7", Limit: Limit{MaxInFlight: 2}}, {Name: "host:eu.api.example.com"}}, groups,
		"the host renders from the context; the path does not matter")

	for url, host := range map[string]string{
		"http://127.0.0.1:8080/x":            "127.0.0.1",
		"https://{{parents.a.host}}/x":       "",
		"https://{{context.missing}}.com/":   "",
		"not a url":                          "",
		"https://user:pw@Example.COM:8443/x": "example.com",
		"https://[::1/x":                     "",
		"https://[::1]:9000?q={{parents.a}}": "::1",
	} {
		st := StepTemplate{Name: "s", Handler: "http", Config: json.RawMessage(`{"url": "` + url + `"}`)}
		require.Equal(t, host, StepHost(st, ctx), url)
	}
	require.Empty(t, StepHost(StepTemplate{Name: "s", Handler: "noop", Config: json.RawMessage(`{"url": "http://a/"}`)}, nil))
	require.True(t, PauseKey.Paused("key:n/order=c7"))
	require.False(t, PauseKey.Paused("host:a"))
	require.True(t, PauseHost.Paused("host:a"))
}

func TestAdmitHoldsAPausedGroup(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	paused := Group{Name: "key:n/order=c7"}
	other := Group{Name: "key:n/order=c8"}
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	cands := []Candidate{{Step: ids[0], Groups: []Group{paused}}, {Step: ids[1], Groups: []Group{other}}, {Step: ids[2], Groups: []Group{paused}}}
	a := Admit(cands, nil, nil, map[string]time.Time{paused.Name: now.Add(30 * time.Second)}, now, time.Second)
	require.Equal(t, []Admitted{{Step: ids[1]}}, a.Admitted, "only the key not paused")
	require.Len(t, a.Held, 2)
	require.True(t, a.Held[0].Paused)
	require.False(t, a.Held[0].Rated)
	require.Equal(t, "key:n/order=c7: paused by a Retry-After answer until 2026-12-02T12:00:30Z", a.Held[0].Reason)
	require.Equal(t, now.Add(29*time.Second), a.Retry, "the next round when the pause ends within the horizon")

	// Within the horizon the step goes, delayed to the pause's end.
	b := Admit(cands[:1], nil, nil, map[string]time.Time{paused.Name: now.Add(400 * time.Millisecond)}, now, time.Second)
	require.Equal(t, []Admitted{{Step: ids[0], Delay: 400 * time.Millisecond}}, b.Admitted)
	// A pause that has ended holds nothing.
	c := Admit(cands[:1], nil, nil, map[string]time.Time{paused.Name: now.Add(-time.Second)}, now, time.Second)
	require.Equal(t, []Admitted{{Step: ids[0]}}, c.Admitted)
}
