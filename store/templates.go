package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker-run/tasker/workflow"
)

// templateDef is the part of a template a task is built from, as stored in
// templates.definition.
type templateDef struct {
	Steps []TemplateStep `json:"steps"`
}

// TemplateStep is a step of a registered template as stored: its handler
// and config, its parents, its timeout and its retry policy.
type TemplateStep struct {
	Name          string          `json:"name"`
	Handler       string          `json:"handler"`
	Config        json.RawMessage `json:"config,omitempty"`
	DependsOn     []string        `json:"depends_on,omitempty"`
	TimeoutMS     int64           `json:"timeout_ms"`
	Retryable     bool            `json:"retryable"`
	MaxAttempts   int             `json:"max_attempts"`
	BackoffBaseMS int64           `json:"backoff_base_ms,omitempty"`
	BackoffMaxMS  int64           `json:"backoff_max_ms,omitempty"`
	Concurrency   int             `json:"concurrency,omitempty"`
	Key           string          `json:"concurrency_key,omitempty"`
	KeyScope      string          `json:"key_scope,omitempty"`
	MaxPerKey     int             `json:"max_per_key,omitempty"`
	RatePerKey    string          `json:"rate_per_key,omitempty"`
	BurstPerKey   int             `json:"burst_per_key,omitempty"`
}

func definitionOf(t *workflow.Template) templateDef {
	def := templateDef{Steps: make([]TemplateStep, 0, len(t.Steps))}
	for _, st := range t.Steps {
		def.Steps = append(def.Steps, TemplateStep{
			Name:          st.Name,
			Handler:       st.Handler,
			Config:        st.Config,
			DependsOn:     st.DependsOn,
			TimeoutMS:     st.Timeout.Milliseconds(),
			Retryable:     st.Retry.Retryable,
			MaxAttempts:   st.Retry.MaxAttempts,
			BackoffBaseMS: st.Retry.BackoffBase.Milliseconds(),
			BackoffMaxMS:  st.Retry.BackoffMax.Milliseconds(),
			Concurrency:   st.Flow.Concurrency,
			Key:           st.Flow.Key,
			KeyScope:      st.Flow.KeyScope,
			MaxPerKey:     st.Flow.KeyLimit.MaxInFlight,
			RatePerKey:    st.Flow.KeyLimit.Rate.String(),
			BurstPerKey:   st.Flow.KeyLimit.Burst,
		})
	}
	return def
}

// stepTemplates turns a stored definition back into the steps of a
// template.
func (d templateDef) stepTemplates() ([]workflow.StepTemplate, error) {
	out := make([]workflow.StepTemplate, len(d.Steps))
	for i, st := range d.Steps {
		var rate workflow.Rate
		if st.RatePerKey != "" {
			var err error
			if rate, err = workflow.ParseRate(st.RatePerKey); err != nil {
				return nil, fmt.Errorf("step %s: %w", st.Name, err)
			}
		}
		out[i] = workflow.StepTemplate{
			Name:      st.Name,
			Handler:   st.Handler,
			Config:    st.Config,
			DependsOn: st.DependsOn,
			Timeout:   time.Duration(st.TimeoutMS) * time.Millisecond,
			Retry: workflow.RetryPolicy{
				Retryable:   st.Retryable,
				MaxAttempts: st.MaxAttempts,
				BackoffBase: time.Duration(st.BackoffBaseMS) * time.Millisecond,
				BackoffMax:  time.Duration(st.BackoffMaxMS) * time.Millisecond,
			},
			Flow: workflow.StepFlow{
				Concurrency: st.Concurrency, Key: st.Key, KeyScope: st.KeyScope,
				KeyLimit: workflow.Limit{MaxInFlight: st.MaxPerKey, Rate: rate, Burst: st.BurstPerKey},
			},
		}
	}
	return out, nil
}

// TemplateInfo is a registered template.
type TemplateInfo struct {
	ID           int64     `json:"id"`
	Namespace    string    `json:"namespace"`
	Name         string    `json:"name"`
	Version      string    `json:"version"`
	Description  string    `json:"description"`
	Hash         string    `json:"hash"`
	Steps        int       `json:"steps"`
	Source       string    `json:"source"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// TemplateRegister records t (insert, or update when its content hash
// changed) and reports whether anything changed.
func (s *Store) TemplateRegister(ctx context.Context, t *workflow.Template) (bool, error) {
	major, minor, patch, pre, err := parseVersion(t.Version)
	if err != nil {
		return false, fmt.Errorf("template %s/%s: %w", t.Namespace, t.Name, err)
	}
	def, err := json.Marshal(definitionOf(t))
	if err != nil {
		return false, fmt.Errorf("encoding template %s/%s: %w", t.Namespace, t.Name, err)
	}
	tag, err := stmt("template_register").exec(ctx, s.pool, args{
		"namespace": t.Namespace, "name": t.Name, "version": t.Version, "major": major, "minor": minor,
		"patch": patch, "pre": pre, "description": t.Description, "hash": t.Hash, "definition": def, "source": t.Source,
	})
	if err != nil {
		return false, fmt.Errorf("registering template %s/%s %s: %w", t.Namespace, t.Name, t.Version, translate(err))
	}
	return tag.RowsAffected() > 0, nil
}

// TemplateList returns the registered templates, by namespace, name and
// newest version first.
func (s *Store) TemplateList(ctx context.Context) ([]TemplateInfo, error) {
	rows, err := stmt("template_list").query(ctx, s.pool, nil)
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TemplateInfo, error) {
		var t TemplateInfo
		err := r.Scan(&t.ID, &t.Namespace, &t.Name, &t.Version, &t.Description, &t.Hash, &t.Steps, &t.Source, &t.RegisteredAt, &t.UpdatedAt)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	return out, nil
}

// TemplateDetail is a registered template with its steps.
type TemplateDetail struct {
	TemplateInfo
	StepList []TemplateStep `json:"step_list"`
}

// TemplateShow returns the registered template with the id, with its steps
// in template order.
func (s *Store) TemplateShow(ctx context.Context, id int64) (TemplateDetail, error) {
	var (
		d   TemplateDetail
		raw []byte
	)
	t := &d.TemplateInfo
	err := stmt("template_show").queryRow(ctx, s.pool, args{"id": id}).
		Scan(&t.ID, &t.Namespace, &t.Name, &t.Version, &t.Description, &t.Hash, &t.Steps, &t.Source, &t.RegisteredAt, &t.UpdatedAt, &raw)
	if err != nil {
		if err = translate(err); errors.Is(err, ErrNotFound) {
			return d, fmt.Errorf("template %d: %w", id, ErrNotFound)
		}
		return d, fmt.Errorf("reading template %d: %w", id, err)
	}
	var def templateDef
	if err := json.Unmarshal(raw, &def); err != nil {
		return d, fmt.Errorf("decoding template %d: %w", id, err)
	}
	d.StepList = def.Steps
	return d, nil
}

// resolvedTemplate is what task creation needs of a template.
type resolvedTemplate struct {
	ID      int64
	Version string
	Steps   []workflow.StepTemplate
}

// templateCache keeps decoded definitions by id and content hash, so a
// re-registered template is decoded again while an unchanged one never is.
type templateCache struct {
	mu   sync.Mutex
	defs map[int64]cachedDef
}

type cachedDef struct {
	hash  string
	steps []workflow.StepTemplate
}

func newTemplateCache() *templateCache { return &templateCache{defs: map[int64]cachedDef{}} }

// templateResolve finds the template a request names: an exact version, or
// the newest when version is empty. A miss returns a *RefusedError saying
// whether the namespace, the name or the version is unknown, read in the
// same statement as the miss, so one snapshot answers both.
func (s *Store) templateResolve(ctx context.Context, tx db, namespace, name, version string) (resolvedTemplate, error) {
	var (
		rt                 resolvedTemplate
		id                 *int64
		found, hash        *string
		nsKnown, nameKnown *bool
	)
	err := stmt("template_resolve").queryRow(ctx, tx, args{"namespace": namespace, "name": name, "version": version}).
		Scan(&id, &found, &hash, &nsKnown, &nameKnown)
	if err != nil {
		return rt, fmt.Errorf("looking up template %s/%s: %w", namespace, name, err)
	}
	if id == nil {
		return rt, templateMiss(namespace, name, version, *nsKnown, *nameKnown)
	}
	rt.ID, rt.Version = *id, *found

	s.templates.mu.Lock()
	c, ok := s.templates.defs[rt.ID]
	s.templates.mu.Unlock()
	if ok && c.hash == *hash {
		rt.Steps = c.steps
		return rt, nil
	}
	var (
		raw     []byte
		current string
	)
	if err := stmt("template_definition").queryRow(ctx, tx, args{"id": rt.ID}).Scan(&raw, &current); err != nil {
		return rt, fmt.Errorf("reading template %d: %w", rt.ID, err)
	}
	var def templateDef
	if err := json.Unmarshal(raw, &def); err != nil {
		return rt, fmt.Errorf("decoding template %d: %w", rt.ID, err)
	}
	if rt.Steps, err = def.stepTemplates(); err != nil {
		return rt, fmt.Errorf("decoding template %d: %w", rt.ID, err)
	}
	s.templates.mu.Lock()
	s.templates.defs[rt.ID] = cachedDef{hash: current, steps: rt.Steps}
	s.templates.mu.Unlock()
	return rt, nil
}

// templateMiss explains which part of a template reference is unknown. The
// refusal is marked missing: the template may be registered a moment later
// (by a node starting), so a request is put off for the grace period
// before it is rejected.
func templateMiss(namespace, name, version string, nsKnown, nameKnown bool) error {
	var reason string
	switch {
	case !nsKnown:
		reason = fmt.Sprintf("unknown namespace %q", namespace)
	case !nameKnown:
		reason = fmt.Sprintf("unknown template %q in namespace %q", name, namespace)
	default:
		reason = fmt.Sprintf("unknown version %q of template %s/%s", version, namespace, name)
	}
	return &RefusedError{Action: "task request", Reason: reason, missing: true}
}

// parseVersion splits MAJOR.MINOR.PATCH[-PRE] into its parts.
func parseVersion(v string) (major, minor, patch int, pre string, err error) {
	core, pre, _ := strings.Cut(v, "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return 0, 0, 0, "", fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", v)
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, 0, 0, "", fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", v)
		}
		nums[i] = n
	}
	return nums[0], nums[1], nums[2], pre, nil
}
