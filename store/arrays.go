package store

import (
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// The statements pass their batches as arrays. pgx encodes a Go slice
// element by element through an interface, boxing each element: a heap
// allocation per UUID, string and bigint, about a sixth of the node's
// allocations per step. These slices encode the same arrays from the same
// memory: each element is handed to pgx as a pointer into the slice (an
// interface holding a pointer allocates nothing) of a type pgx encodes
// through its valuer interface. statement.bind applies them to every
// argument of their slice types.

// uuidArray encodes [][16]byte as a uuid[]; nil is NULL, as for a slice.
type uuidArray [][16]byte

func (a uuidArray) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a uuidArray) Index(i int) any                     { return (*uuidElem)(&a[i]) }
func (a uuidArray) IndexType() any                      { return (*uuidElem)(nil) }

type uuidElem [16]byte

func (u *uuidElem) UUIDValue() (pgtype.UUID, error) { return pgtype.UUID{Bytes: *u, Valid: true}, nil }

// textArray encodes []string as a text[] (or any array type PostgreSQL
// casts it to); nil is NULL.
type textArray []string

func (a textArray) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a textArray) Index(i int) any                     { return (*textElem)(&a[i]) }
func (a textArray) IndexType() any                      { return (*textElem)(nil) }

type textElem string

func (t *textElem) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*t), Valid: true}, nil
}

// int64Array encodes []int64 as a bigint[]; nil is NULL.
type int64Array []int64

func (a int64Array) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a int64Array) Index(i int) any                     { return (*int64Elem)(&a[i]) }
func (a int64Array) IndexType() any                      { return (*int64Elem)(nil) }

type int64Elem int64

func (n *int64Elem) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*n), Valid: true}, nil
}

// The slices of pointers, whose nil elements are NULLs, go to pgx as
// their own pointers, converted to the element types above: pgx encodes
// them by reflection otherwise, an allocation per element.

// nullInt64Array encodes []*int64 as a bigint[].
type nullInt64Array []*int64

func (a nullInt64Array) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a nullInt64Array) Index(i int) any {
	if a[i] == nil {
		return nil
	}
	return (*int64Elem)(a[i])
}
func (a nullInt64Array) IndexType() any { return (*int64Elem)(nil) }

// nullInt32Array encodes []*int32 as an int[].
type nullInt32Array []*int32

func (a nullInt32Array) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a nullInt32Array) Index(i int) any {
	if a[i] == nil {
		return nil
	}
	return (*int32Elem)(a[i])
}
func (a nullInt32Array) IndexType() any { return (*int32Elem)(nil) }

type int32Elem int32

func (n *int32Elem) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: int64(*n), Valid: true}, nil
}

// nullTextArray encodes []*string as a text[].
type nullTextArray []*string

func (a nullTextArray) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a nullTextArray) Index(i int) any {
	if a[i] == nil {
		return nil
	}
	return (*textElem)(a[i])
}
func (a nullTextArray) IndexType() any { return (*textElem)(nil) }

// nullTimeArray encodes []*time.Time as a timestamptz[].
type nullTimeArray []*time.Time

func (a nullTimeArray) Dimensions() []pgtype.ArrayDimension { return dimensions(len(a), a == nil) }
func (a nullTimeArray) Index(i int) any {
	if a[i] == nil {
		return nil
	}
	return (*timeElem)(a[i])
}
func (a nullTimeArray) IndexType() any { return (*timeElem)(nil) }

type timeElem time.Time

func (t *timeElem) TimestamptzValue() (pgtype.Timestamptz, error) {
	return pgtype.Timestamptz{Time: time.Time(*t), Valid: true}, nil
}

// dimensions are those of a one-dimensional array of n elements, or none
// (NULL) for a nil slice.
func dimensions(n int, null bool) []pgtype.ArrayDimension {
	if null {
		return nil
	}
	return []pgtype.ArrayDimension{{Length: int32(n), LowerBound: 1}}
}

// arrayArg returns v as the array type that encodes it without boxing its
// elements, or v itself.
func arrayArg(v any) any {
	switch a := v.(type) {
	case [][16]byte:
		return uuidArray(a)
	case []string:
		return textArray(a)
	case []int64:
		return int64Array(a)
	case []*int64:
		return nullInt64Array(a)
	case []*int32:
		return nullInt32Array(a)
	case []*string:
		return nullTextArray(a)
	case []*time.Time:
		return nullTimeArray(a)
	}
	return v
}
