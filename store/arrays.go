package store

import (
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// The statements pass their batches as arrays. pgx encodes a Go slice
// element by element through an interface, boxing each element: a heap
// allocation per UUID, string and bigint, about a sixth of the node's
// allocations per step. A valuerArray encodes the same array from the same
// memory: each element is handed to pgx as a pointer (an interface holding
// a pointer allocates nothing) of a type pgx encodes through its valuer
// interface; a nil pointer is NULL. statement.bind applies arrayArg to
// every argument.

// valuerArray is the array of s, whose element i pgx is handed as elem(&s[i]).
type valuerArray[T any, P any] struct {
	s    []T
	elem func(*T) P
}

// Dimensions implements pgtype.ArrayGetter: one dimension, or none (NULL)
// for a nil slice, as pgx encodes a slice.
func (a valuerArray[T, P]) Dimensions() []pgtype.ArrayDimension {
	if a.s == nil {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(len(a.s)), LowerBound: 1}}
}

// Index implements pgtype.ArrayGetter.
func (a valuerArray[T, P]) Index(i int) any { return a.elem(&a.s[i]) }

// IndexType implements pgtype.ArrayGetter.
func (a valuerArray[T, P]) IndexType() any {
	var zero P
	return zero
}

// The element types, each a valuer of its PostgreSQL type.
type (
	uuidElem  [16]byte
	textElem  string
	int64Elem int64
	int32Elem int32
	timeElem  time.Time
)

func (u *uuidElem) UUIDValue() (pgtype.UUID, error) { return pgtype.UUID{Bytes: *u, Valid: true}, nil }

func (t *textElem) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*t), Valid: true}, nil
}

func (n *int64Elem) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*n), Valid: true}, nil
}

func (n *int32Elem) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*n), Valid: true}, nil
}

func (t *timeElem) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: time.Time(*t), Valid: true}, nil
}

// arrayArg returns v as the array that encodes it without boxing its
// elements, or v itself: uuid, text and bigint slices, and slices of
// pointers (nil elements are NULLs) to bigints, ints, texts and times.
func arrayArg(v any) any {
	switch a := v.(type) {
	case [][16]byte:
		return valuerArray[[16]byte, *uuidElem]{a, func(u *[16]byte) *uuidElem { return (*uuidElem)(u) }}
	case []string:
		return valuerArray[string, *textElem]{a, func(s *string) *textElem { return (*textElem)(s) }}
	case []int64:
		return valuerArray[int64, *int64Elem]{a, func(n *int64) *int64Elem { return (*int64Elem)(n) }}
	case []*int64:
		return valuerArray[*int64, *int64Elem]{a, func(n **int64) *int64Elem { return (*int64Elem)(*n) }}
	case []*int32:
		return valuerArray[*int32, *int32Elem]{a, func(n **int32) *int32Elem { return (*int32Elem)(*n) }}
	case []*string:
		return valuerArray[*string, *textElem]{a, func(s **string) *textElem { return (*textElem)(*s) }}
	case []*time.Time:
		return valuerArray[*time.Time, *timeElem]{a, func(t **time.Time) *timeElem { return (*timeElem)(*t) }}
	}
	return v
}
