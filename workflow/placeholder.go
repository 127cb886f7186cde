package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Placeholders expands the {{context.a.b}} and {{parents.step.a.b}}
// placeholders of a step's config: it looks their paths up in the step's
// context and its parents' results, decoding each document once and only
// when first needed.
type Placeholders struct {
	in      StepInput
	context any
	decoded bool
	parents map[string]any
}

// NewPlaceholders returns the placeholders of in.
func NewPlaceholders(in StepInput) *Placeholders {
	return &Placeholders{in: in, parents: make(map[string]any)}
}

// Lookup resolves a placeholder expression such as "context.order.id" or
// "parents.charge.receipt.number".
func (r *Placeholders) Lookup(expr string) (any, error) {
	segs := strings.Split(expr, ".")
	if slices.Contains(segs, "") {
		return nil, errors.New("empty path segment")
	}
	switch segs[0] {
	case "context":
		if !r.decoded {
			v, err := DecodeJSON(r.in.Context)
			if err != nil {
				return nil, fmt.Errorf("decoding task context: %w", err)
			}
			r.context, r.decoded = v, true
		}
		return walk(r.context, "context", segs[1:])
	case "parents":
		if len(segs) == 1 {
			all := make(map[string]any, len(r.in.Parents))
			for name := range r.in.Parents {
				v, err := r.parent(name)
				if err != nil {
					return nil, err
				}
				all[name] = v
			}
			return all, nil
		}
		name := segs[1]
		if _, ok := r.in.Parents[name]; !ok {
			return nil, fmt.Errorf("no parent step %q (parents: %s)", name,
				strings.Join(slices.Sorted(maps.Keys(r.in.Parents)), ", "))
		}
		v, err := r.parent(name)
		if err != nil {
			return nil, err
		}
		return walk(v, "parents."+name, segs[2:])
	default:
		return nil, fmt.Errorf("must start with context or parents, not %q", segs[0])
	}
}

func (r *Placeholders) parent(name string) (any, error) {
	if v, ok := r.parents[name]; ok {
		return v, nil
	}
	v, err := DecodeJSON(r.in.Parents[name])
	if err != nil {
		return nil, fmt.Errorf("decoding result of parent step %q: %w", name, err)
	}
	r.parents[name] = v
	return v, nil
}

// walk follows segs down from v; at names the path walked so far in errors.
func walk(v any, at string, segs []string) (any, error) {
	for _, seg := range segs {
		switch c := v.(type) {
		case map[string]any:
			next, ok := c[seg]
			if !ok {
				return nil, fmt.Errorf("%s has no key %q", at, seg)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) {
				return nil, fmt.Errorf("%s is an array of %d, %q is not an index in it", at, len(c), seg)
			}
			v = c[i]
		default:
			return nil, fmt.Errorf("%s is %s, not an object or array", at, jsonType(v))
		}
		at += "." + seg
	}
	return v, nil
}

// Expand replaces every placeholder in s. escape, when not nil, transforms
// or refuses each rendered value; it gets the output built so far, so the
// URL escaper can tell the authority from the path and the query, and the
// placeholder, to name it.
func (r *Placeholders) Expand(s string, escape func(built, placeholder, value string) (string, error)) (string, error) {
	if !strings.Contains(s, "{{") {
		return s, nil
	}
	var b strings.Builder
	for {
		start := strings.Index(s, "{{")
		if start < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:start])
		end := strings.Index(s[start:], "}}")
		if end < 0 {
			return "", fmt.Errorf("unterminated placeholder %q", s[start:])
		}
		ph := s[start : start+end+2]
		v, err := r.Lookup(strings.TrimSpace(ph[2 : len(ph)-2]))
		if err != nil {
			return "", fmt.Errorf("placeholder %s: %w", ph, err)
		}
		text, err := render(v)
		if err != nil {
			return "", fmt.Errorf("placeholder %s: %w", ph, err)
		}
		if escape != nil {
			if text, err = escape(b.String(), ph, text); err != nil {
				return "", err
			}
		}
		b.WriteString(text)
		s = s[start+end+2:]
	}
}

// ExpandValue expands placeholders in every string of a decoded JSON value;
// a string that is exactly one placeholder becomes the value it names. at
// is the key path, for errors.
func (r *Placeholders) ExpandValue(v any, at string) (any, error) {
	switch c := v.(type) {
	case string:
		if inner, ok := singlePlaceholder(c); ok {
			val, err := r.Lookup(inner)
			if err != nil {
				return nil, fmt.Errorf("%s: placeholder %s: %w", at, c, err)
			}
			return val, nil
		}
		s, err := r.Expand(c, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		return s, nil
	case map[string]any:
		out := make(map[string]any, len(c))
		for k, e := range c {
			x, err := r.ExpandValue(e, at+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = x
		}
		return out, nil
	case []any:
		out := make([]any, len(c))
		for i, e := range c {
			x, err := r.ExpandValue(e, fmt.Sprintf("%s[%d]", at, i))
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	default:
		return v, nil
	}
}

// singlePlaceholder reports whether s is exactly one placeholder, and
// returns its trimmed expression.
func singlePlaceholder(s string) (string, bool) {
	if !strings.HasPrefix(s, "{{") || !strings.HasSuffix(s, "}}") || len(s) < 4 {
		return "", false
	}
	inner := s[2 : len(s)-2]
	if strings.Contains(inner, "{{") || strings.Contains(inner, "}}") {
		return "", false
	}
	return strings.TrimSpace(inner), true
}

// render turns a placeholder's value into text: strings as they are, null
// as "", anything else as compact JSON.
func render(v any) (string, error) {
	switch c := v.(type) {
	case nil:
		return "", nil
	case string:
		return c, nil
	case json.Number:
		return c.String(), nil
	case bool:
		return strconv.FormatBool(c), nil
	default:
		b, err := MarshalJSON(c)
		return string(b), err
	}
}

// DecodeJSON decodes a document keeping numbers exact; an empty document is
// null.
func DecodeJSON(raw json.RawMessage) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// MarshalJSON encodes v without escaping <, > and &, which a downstream
// service would otherwise receive as \u003c and friends.
func MarshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	default:
		return fmt.Sprintf("%T", v)
	}
}
