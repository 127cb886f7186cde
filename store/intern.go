package store

import "github.com/tasker-run/tasker/internal/cowmap"

// The hot statements read the same few short texts on every row: step and
// task states, step names, handlers, namespaces and template names. Each
// scanned into a string is an allocation; internedText scans them into
// the strings it has seen before instead. The table (a cowmap) is
// bounded, in entries and in the length of what it keeps, so that texts
// from outside (names in a hostile template) cannot grow it without end.

const (
	internMax    = 1024
	internMaxLen = 64
)

var interned = cowmap.New[string, string](internMax)

// intern returns v as a string, the table's when it holds it.
func intern(v []byte) string {
	if s, ok := interned.Load()[string(v)]; ok {
		return s
	}
	s := string(v)
	if len(v) <= internMaxLen {
		interned.Add(s, s)
	}
	return s
}

// internedText scans a text column (NULL as not Valid) through intern.
type internedText struct {
	String string
	Valid  bool
}

// ScanBytes implements pgtype.BytesScanner.
func (t *internedText) ScanBytes(v []byte) error {
	if v == nil {
		*t = internedText{}
		return nil
	}
	*t = internedText{String: intern(v), Valid: true}
	return nil
}
