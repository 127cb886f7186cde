package store

import "github.com/jackc/pgx/v5/pgtype"

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
	}
	return v
}
