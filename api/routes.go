package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/store"
	"github.com/tasker-run/tasker/workflow"
)

// API error codes: stable strings a client can switch on.
const (
	CodeBadRequest           = "bad_request"            // 400: a malformed id, filter or body
	CodeUnauthorized         = "unauthorized"           // 401: the API token is missing or wrong
	CodeForbidden            = "forbidden"              // 403: a non-loopback Host without an API token
	CodeNotFound             = "not_found"              // 404: no such task or route
	CodeRefused              = "refused"                // 409: the state machine refused the action
	CodeTooLarge             = "too_large"              // 413: the body is over the limit
	CodeUnsupportedMediaType = "unsupported_media_type" // 415: a POST whose body is not declared JSON
	CodeInternal             = "internal"               // 500: see the node's log
)

// maxBodyBytes bounds an action's JSON body.
const maxBodyBytes = 1 << 20

// routes adds the operator's read and action API under /v1. Every
// handler goes through Operator, as the CLI does.
func (s *server) routes(mux *http.ServeMux) {
	op := s.op
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "state", "namespace", "name", "since", "q", "limit", "before"); err != nil {
			s.fail(w, r, err)
			return
		}
		f := TaskFilter{State: q.Get("state"), Namespace: q.Get("namespace"), Name: q.Get("name"), Since: q.Get("since"),
			Search: q.Get("q"), Before: q.Get("before")}
		var err error
		if f.Limit, err = limitParam(q); err != nil {
			s.fail(w, r, err)
			return
		}
		page, err := op.Tasks(r.Context(), f)
		s.reply(w, r, page, err)
	})
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := ParseTaskID(r.PathValue("id"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d, err := op.Task(r.Context(), id)
		s.reply(w, r, d, err)
	})
	mux.HandleFunc("POST /v1/tasks/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		s.action(w, r, &struct{}{}, func(ctx context.Context, id uuid.UUID) (ActionResult, error) {
			return op.Retry(ctx, id)
		})
	})
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		s.action(w, r, &body, func(ctx context.Context, id uuid.UUID) (ActionResult, error) {
			return op.Cancel(ctx, id, body.Reason)
		})
	})
	mux.HandleFunc("POST /v1/tasks/{id}/resolve", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Step   string          `json:"step"`
			Result json.RawMessage `json:"result"`
		}
		s.action(w, r, &body, func(ctx context.Context, id uuid.UUID) (ActionResult, error) {
			return op.Resolve(ctx, id, body.Step, body.Result)
		})
	})
	mux.HandleFunc("GET /v1/templates", func(w http.ResponseWriter, r *http.Request) {
		if err := knownParams(r.URL.Query()); err != nil {
			s.fail(w, r, err)
			return
		}
		page, err := op.Templates(r.Context())
		s.reply(w, r, page, err)
	})
	mux.HandleFunc("GET /v1/templates/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := ParseTemplateID(r.PathValue("id"))
		if err == nil {
			err = knownParams(r.URL.Query())
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d, err := op.Template(r.Context(), id)
		s.reply(w, r, d, err)
	})
	// A list whose only parameter is its limit.
	limited := func(list func(ctx context.Context, limit int) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			if err := knownParams(q, "limit"); err != nil {
				s.fail(w, r, err)
				return
			}
			limit, err := limitParam(q)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			page, err := list(r.Context(), limit)
			s.reply(w, r, page, err)
		}
	}
	mux.HandleFunc("GET /v1/requests/rejected", limited(func(ctx context.Context, limit int) (any, error) {
		return op.Rejected(ctx, limit)
	}))
	mux.HandleFunc("POST /v1/requests/rejected/{msg_id}/replay", func(w http.ResponseWriter, r *http.Request) {
		id, err := ParseMsgID(r.PathValue("msg_id"))
		if err == nil {
			err = decodeBody(w, r, &struct{}{})
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		rr, err := op.Replay(r.Context(), id)
		s.reply(w, r, rr, err)
	})
	mux.HandleFunc("GET /v1/messages/archived", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "queue", "limit", "before"); err != nil {
			s.fail(w, r, err)
			return
		}
		f := ArchivedFilter{Queue: q.Get("queue"), Before: q.Get("before")}
		var err error
		if f.Limit, err = limitParam(q); err != nil {
			s.fail(w, r, err)
			return
		}
		page, err := op.Archived(r.Context(), f)
		s.reply(w, r, page, err)
	})
	mux.HandleFunc("GET /v1/limits", limited(func(ctx context.Context, limit int) (any, error) {
		return op.Limits(ctx, limit)
	}))
	s.scheduleRoutes(mux)
	// Anything else under /v1 answers in the API's error format.
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusNotFound, apiError{Code: CodeNotFound, Message: fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path)})
	})
}

// knownParams refuses query parameters outside known, so a misspelt filter
// is an error instead of a silently unfiltered list.
func knownParams(q url.Values, known ...string) error {
	for k := range q {
		if k != prettyParam && !slices.Contains(known, k) {
			if len(known) == 0 {
				return invalidf("unknown query parameter %q (this route takes none)", k)
			}
			return invalidf("unknown query parameter %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
	return nil
}

func limitParam(q url.Values) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, invalidf("limit %q is not a positive number", s)
	}
	return n, nil
}

// decodeBody reads an optional JSON object body into v; an empty body
// leaves v as it is. Unknown fields are refused.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &tooLargeError{limit: tooLarge.Limit}
	case err != nil:
		return invalidf("request body: %v", err)
	}
	// The body's object is one level; a result in it may nest the limit.
	if depth := workflow.JSONDepth(body); depth > workflow.MaxJSONDepth+1 {
		return invalidf("request body: nested %d levels deep, more than the limit of %d within a field", depth, workflow.MaxJSONDepth)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return invalidf("request body: %v", err)
	case dec.More():
		return invalidf("request body: more than one JSON value")
	}
	return nil
}

// action serves an operator action on the task of the path: its optional
// JSON body is decoded into body, then do runs.
func (s *server) action(w http.ResponseWriter, r *http.Request, body any, do func(context.Context, uuid.UUID) (ActionResult, error)) {
	id, err := ParseTaskID(r.PathValue("id"))
	if err == nil {
		err = decodeBody(w, r, body)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := do(r.Context(), id)
	s.reply(w, r, res, err)
}

func (s *server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, v)
}

// apiFail answers err with its status and stable code. Only internal
// errors are logged: the others are the client's to read.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		invalid *InvalidError
		refused *store.RefusedError
		trans   *workflow.TransitionError
	)
	var tooLarge *tooLargeError
	switch {
	case errors.As(err, &tooLarge):
		writeJSON(w, r, http.StatusRequestEntityTooLarge, apiError{Code: CodeTooLarge, Message: err.Error()})
	case errors.As(err, &invalid):
		writeJSON(w, r, http.StatusBadRequest, apiError{Code: CodeBadRequest, Message: err.Error()})
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, r, http.StatusNotFound, apiError{Code: CodeNotFound, Message: err.Error()})
	case errors.As(err, &refused), errors.As(err, &trans):
		writeJSON(w, r, http.StatusConflict, apiError{Code: CodeRefused, Message: err.Error()})
	case errors.Is(err, store.ErrStale):
		writeJSON(w, r, http.StatusConflict, apiError{Code: CodeRefused, Message: "the task changed meanwhile; read it again: " + err.Error()})
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		s.d.Logger.Error("api request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeJSON(w, r, http.StatusInternalServerError, apiError{Code: CodeInternal, Message: "internal error; the node's log has the details"})
	}
}

// tooLargeError is a body over the limit.
type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("request body: larger than %d bytes", e.limit)
}

// scheduleRoutes adds the schedule routes: list, create, show, pause,
// resume, trigger and delete.
func (s *server) scheduleRoutes(mux *http.ServeMux) {
	op := s.op
	mux.HandleFunc("GET /v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		if err := knownParams(r.URL.Query()); err != nil {
			s.fail(w, r, err)
			return
		}
		page, err := op.Schedules(r.Context())
		s.reply(w, r, page, err)
	})
	mux.HandleFunc("POST /v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		var body workflow.Schedule
		if err := decodeBody(w, r, &body); err != nil {
			s.fail(w, r, err)
			return
		}
		si, err := op.CreateSchedule(r.Context(), body)
		s.reply(w, r, si, err)
	})
	named := func(do func(ctx context.Context, name string) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			name, err := ParseScheduleName(r.PathValue("name"))
			if err == nil {
				err = knownParams(r.URL.Query())
			}
			if err == nil && r.Method == http.MethodPost {
				err = decodeBody(w, r, &struct{}{})
			}
			if err != nil {
				s.fail(w, r, err)
				return
			}
			v, err := do(r.Context(), name)
			s.reply(w, r, v, err)
		}
	}
	mux.HandleFunc("GET /v1/schedules/{name}", named(func(ctx context.Context, name string) (any, error) {
		return op.Schedule(ctx, name)
	}))
	mux.HandleFunc("POST /v1/schedules/{name}/pause", named(func(ctx context.Context, name string) (any, error) {
		return op.PauseSchedule(ctx, name, true)
	}))
	mux.HandleFunc("POST /v1/schedules/{name}/resume", named(func(ctx context.Context, name string) (any, error) {
		return op.PauseSchedule(ctx, name, false)
	}))
	mux.HandleFunc("POST /v1/schedules/{name}/trigger", named(func(ctx context.Context, name string) (any, error) {
		return op.TriggerSchedule(ctx, name)
	}))
	mux.HandleFunc("DELETE /v1/schedules/{name}", named(func(ctx context.Context, name string) (any, error) {
		return op.DeleteSchedule(ctx, name)
	}))
}
