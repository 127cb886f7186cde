package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/tasker-run/tasker/workflow"
)

// Limits on the identifiers carried by a task request: the domain's.
const (
	// MaxNamespaceLength keeps NamespaceQueue(namespace) within MaxNameLength.
	MaxNamespaceLength = workflow.MaxNamespaceLen
	// MaxTaskNameLength is the longest task (template) name.
	MaxTaskNameLength = workflow.MaxNameLen
)

// FieldProblem is one thing wrong with one field of a message.
type FieldProblem struct {
	// Field is the JSON field name, or "$" for the document as a whole.
	Field string
	// Problem says what is wrong, e.g. "missing" or "must be a UUID".
	Problem string
}

// ValidationError lists every problem found in a message, so a sender learns about all of
// them at once.
type ValidationError struct {
	// Kind names the message, e.g. "task request".
	Kind     string
	Problems []FieldProblem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid ")
	b.WriteString(e.Kind)
	for i, p := range e.Problems {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.Field)
		b.WriteString(": ")
		b.WriteString(p.Problem)
	}
	return b.String()
}

// TaskRequest asks Tasker to run a task. It is an immutable value: Context is JSON text,
// not a map a receiver could change.
type TaskRequest struct {
	// RequestID identifies the request; a repeated request creates nothing.
	RequestID uuid.UUID
	// Namespace, Name and Version select the template; an empty Version means the newest.
	Namespace string
	Name      string
	Version   string
	// Context is the task's input, the text of a JSON object. Empty encodes as {}.
	Context string
	// Priority orders tasks; higher runs first. Defaults to 0.
	Priority int
	// RequestedBy says who asked, for operators.
	RequestedBy string
	// CorrelationID ties together everything the request causes. Decoding defaults it to
	// RequestID.
	CorrelationID uuid.UUID
	// Trace is the trace context of the request's headers (TraceFromHeaders),
	// not part of its JSON.
	Trace workflow.Trace
}

type taskRequestJSON struct {
	RequestID     uuid.UUID       `json:"request_id"`
	Namespace     string          `json:"namespace"`
	Name          string          `json:"name"`
	Version       string          `json:"version,omitempty"`
	Context       json.RawMessage `json:"context"`
	Priority      int             `json:"priority,omitempty"`
	RequestedBy   string          `json:"requested_by,omitempty"`
	CorrelationID *uuid.UUID      `json:"correlation_id,omitempty"`
}

// Encode returns the request's JSON.
func (r TaskRequest) Encode() ([]byte, error) { return r.MarshalJSON() }

// MarshalJSON encodes the request with the field names of the task request queue.
func (r TaskRequest) MarshalJSON() ([]byte, error) {
	ctx := json.RawMessage("{}")
	if r.Context != "" {
		if !isObject([]byte(r.Context)) {
			return nil, fmt.Errorf("encoding task request %s: context must be a JSON object", r.RequestID)
		}
		ctx = json.RawMessage(r.Context)
	}
	out := taskRequestJSON{
		RequestID: r.RequestID, Namespace: r.Namespace, Name: r.Name, Version: r.Version,
		Context: ctx, Priority: r.Priority, RequestedBy: r.RequestedBy,
	}
	if r.CorrelationID != uuid.Nil {
		id := r.CorrelationID
		out.CorrelationID = &id
	}
	// Without HTML escaping the context keeps the exact text a decode produced.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encoding task request %s: %w", r.RequestID, err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// DecodeTaskRequest parses and validates a task request. On failure the error is a
// *ValidationError naming every missing or malformed field. Unknown fields are ignored.
// Size limits are the caller's business.
func DecodeTaskRequest(data []byte) (TaskRequest, error) {
	d := newDecoder("task request", data)
	var r TaskRequest
	r.RequestID = d.uuid("request_id", true)
	r.Namespace = d.ident("namespace", MaxNamespaceLength)
	r.Name = d.ident("name", MaxTaskNameLength)
	if v, ok := d.optString("version"); ok && v != "" {
		if workflow.ValidVersion(v) {
			r.Version = v
		} else {
			d.problem("version", "must be a semantic version such as 1.0.0")
		}
	}
	r.Context = d.object("context")
	r.Priority = d.int("priority", false, math.MinInt32)
	r.RequestedBy, _ = d.optString("requested_by")
	r.CorrelationID = d.uuid("correlation_id", false)
	if err := d.err(); err != nil {
		return TaskRequest{}, err
	}
	if r.CorrelationID == uuid.Nil {
		r.CorrelationID = r.RequestID
	}
	return r, nil
}

// StepMessage tells a namespace worker to run one step.
type StepMessage struct {
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	CorrelationID uuid.UUID
}

// Encode returns the message's JSON.
func (m StepMessage) Encode() ([]byte, error) { return m.MarshalJSON() }

// MarshalJSON encodes the message with the field names of the namespace queues.
func (m StepMessage) MarshalJSON() ([]byte, error) {
	return appendStepJSON(make([]byte, 0, stepJSONSize), m.TaskUUID, m.StepUUID, m.CorrelationID, false, 0), nil
}

// stepJSONSize holds a step message or result with every field.
const stepJSONSize = 192

// DecodeStepMessage parses and validates a step message: task_uuid and step_uuid are
// required; correlation_id is optional. Failures are a *ValidationError.
func DecodeStepMessage(data []byte) (StepMessage, error) {
	if task, step, corr, _, ok := decodeStepFlat(data, false); ok {
		return StepMessage{TaskUUID: task, StepUUID: step, CorrelationID: corr}, nil
	}
	return decodeStepMessage(data)
}

// decodeStepMessage is DecodeStepMessage for every shape of message.
func decodeStepMessage(data []byte) (StepMessage, error) {
	d := newDecoder("step message", data)
	m := StepMessage{
		TaskUUID:      d.uuid("task_uuid", true),
		StepUUID:      d.uuid("step_uuid", true),
		CorrelationID: d.uuid("correlation_id", false),
	}
	if err := d.err(); err != nil {
		return StepMessage{}, err
	}
	return m, nil
}

// StepResult tells the orchestrator that a step attempt finished; the outcome itself is
// in the database.
type StepResult struct {
	TaskUUID      uuid.UUID
	StepUUID      uuid.UUID
	CorrelationID uuid.UUID
	// Attempt is the attempt that finished, counting from 1.
	Attempt int
}

// Encode returns the result's JSON.
func (r StepResult) Encode() ([]byte, error) { return r.MarshalJSON() }

// MarshalJSON encodes the result with the field names of the step results queue.
func (r StepResult) MarshalJSON() ([]byte, error) {
	return appendStepJSON(make([]byte, 0, stepJSONSize), r.TaskUUID, r.StepUUID, r.CorrelationID, true, r.Attempt), nil
}

// DecodeStepResult parses and validates a step result: task_uuid, step_uuid and attempt
// (at least 1) are required; correlation_id is optional. Failures are a *ValidationError.
func DecodeStepResult(data []byte) (StepResult, error) {
	if task, step, corr, attempt, ok := decodeStepFlat(data, true); ok {
		return StepResult{TaskUUID: task, StepUUID: step, CorrelationID: corr, Attempt: attempt}, nil
	}
	return decodeStepResult(data)
}

// decodeStepResult is DecodeStepResult for every shape of result.
func decodeStepResult(data []byte) (StepResult, error) {
	d := newDecoder("step result", data)
	r := StepResult{
		TaskUUID:      d.uuid("task_uuid", true),
		StepUUID:      d.uuid("step_uuid", true),
		CorrelationID: d.uuid("correlation_id", false),
		Attempt:       d.int("attempt", true, 1),
	}
	if err := d.err(); err != nil {
		return StepResult{}, err
	}
	return r, nil
}

// decoder validates the fields of one JSON object, collecting every problem.
type decoder struct {
	kind     string
	fields   map[string]json.RawMessage
	problems []FieldProblem
}

func newDecoder(kind string, data []byte) *decoder {
	d := &decoder{kind: kind}
	if depth := workflow.JSONDepth(data); depth > workflow.MaxJSONDepth+1 {
		// The message's own object is one level; its fields may nest
		// workflow.MaxJSONDepth more.
		d.problem("$", fmt.Sprintf("nested %d levels deep, more than the limit of %d within a field", depth, workflow.MaxJSONDepth))
		return d
	}
	if !json.Valid(data) {
		d.problem("$", "malformed JSON")
		return d
	}
	if !isObject(data) {
		d.problem("$", "must be a JSON object")
		return d
	}
	if err := json.Unmarshal(data, &d.fields); err != nil {
		d.problem("$", "malformed JSON")
	}
	return d
}

func (d *decoder) problem(field, problem string) {
	d.problems = append(d.problems, FieldProblem{Field: field, Problem: problem})
}

func (d *decoder) err() error {
	if len(d.problems) == 0 {
		return nil
	}
	return &ValidationError{Kind: d.kind, Problems: d.problems}
}

// raw returns a field's JSON, treating null like absence. It reports false when the
// document itself was unusable or the field is absent.
func (d *decoder) raw(field string) (json.RawMessage, bool) {
	if d.fields == nil {
		return nil, false
	}
	v, ok := d.fields[field]
	if !ok || string(v) == "null" {
		return nil, false
	}
	return v, true
}

func (d *decoder) missing(field string) {
	if d.fields != nil {
		d.problem(field, "missing")
	}
}

func (d *decoder) optString(field string) (string, bool) {
	v, ok := d.raw(field)
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		d.problem(field, "must be a string")
		return "", false
	}
	return s, true
}

func (d *decoder) uuid(field string, required bool) uuid.UUID {
	s, ok := d.optString(field)
	if !ok {
		if required {
			if _, present := d.raw(field); !present {
				d.missing(field)
			}
		}
		return uuid.Nil
	}
	id, err := uuid.Parse(s)
	switch {
	case err != nil:
		d.problem(field, "must be a UUID")
	case id == uuid.Nil:
		d.problem(field, "must not be the nil UUID")
	}
	return id
}

func (d *decoder) ident(field string, maxLen int) string {
	s, ok := d.optString(field)
	if !ok {
		if _, present := d.raw(field); !present {
			d.missing(field)
		}
		return ""
	}
	switch {
	case s == "":
		d.problem(field, "missing")
	case len(s) > maxLen:
		d.problem(field, "longer than "+strconv.Itoa(maxLen)+" characters")
	case !workflow.ValidIdent(s):
		d.problem(field, "must be lower-case letters, digits and underscores, starting with a letter")
	}
	return s
}

// object returns a field that must be a JSON object, compacted; absent means {}.
func (d *decoder) object(field string) string {
	v, ok := d.raw(field)
	if !ok {
		return "{}"
	}
	if !isObject(v) {
		d.problem(field, "must be a JSON object")
		return ""
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		d.problem(field, "must be a JSON object")
		return ""
	}
	return b.String()
}

// int returns an integer field that must be at least minValue and fit in 32 bits.
func (d *decoder) int(field string, required bool, minValue int64) int {
	v, ok := d.raw(field)
	if !ok {
		if required {
			d.missing(field)
		}
		return 0
	}
	// A JSON number written as an integer; json.Number alone would also take "12" (a string)
	// and 1.0 or 1e2 are not integers on the wire.
	var num json.Number
	if v[0] == '"' || json.Unmarshal(v, &num) != nil || strings.ContainsAny(num.String(), ".eE") {
		d.problem(field, "must be an integer")
		return 0
	}
	n, err := strconv.ParseInt(num.String(), 10, 32)
	if err != nil {
		d.problem(field, "must be an integer between "+strconv.FormatInt(minValue, 10)+" and "+strconv.Itoa(math.MaxInt32))
		return 0
	}
	if n < minValue {
		d.problem(field, "must be at least "+strconv.FormatInt(minValue, 10))
		return 0
	}
	return int(n)
}

// isObject reports whether data, valid JSON, is an object.
func isObject(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && json.Valid(data)
}
