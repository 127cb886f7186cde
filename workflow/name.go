package workflow

import "regexp"

// Limits on the names of namespaces and templates.
const (
	// MaxNamespaceLen keeps "<namespace>_queue" and pgmq's derived table
	// names within PostgreSQL's identifier limit.
	MaxNamespaceLen = 40
	// MaxNameLen bounds a template name.
	MaxNameLen = 64
)

// IdentPattern is what a namespace, a template name and a step name look
// like: a lower-case letter, then lower-case letters, digits and
// underscores.
const IdentPattern = `[a-z][a-z0-9_]*`

var (
	identRe = regexp.MustCompile(`^` + IdentPattern + `$`)
	// A semantic version: MAJOR.MINOR.PATCH and an optional pre-release.
	// Build metadata (+build) is refused: it does not order versions, so
	// two templates could tie for "newest".
	semverRe = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)` +
		`(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
)

// ValidIdent reports whether s matches IdentPattern.
func ValidIdent(s string) bool { return identRe.MatchString(s) }

// ValidNamespace reports whether ns is a namespace: IdentPattern, at most
// MaxNamespaceLen characters.
func ValidNamespace(ns string) bool { return len(ns) <= MaxNamespaceLen && identRe.MatchString(ns) }

// ValidName reports whether s is a template name: IdentPattern, at most
// MaxNameLen characters.
func ValidName(s string) bool { return len(s) <= MaxNameLen && identRe.MatchString(s) }

// ValidVersion reports whether s is a semantic version (1.2.3,
// 1.0.0-rc.1).
func ValidVersion(s string) bool { return semverRe.MatchString(s) }

// MaxJSONDepth is how deeply a task context, a step result or an operator's
// result may nest: enough for any document a person writes, and far from
// what makes a reader's work (and an indented answer) grow without bound.
const MaxJSONDepth = 64

// JSONDepth returns how deeply the arrays and objects of a JSON text nest
// (0 for a scalar), reading it once and without recursion, so that it is
// safe on hostile input of any depth. Brackets inside strings do not count.
func JSONDepth(b []byte) int {
	deepest := 0
	JSONStructure(b, func(_ byte, depth int) { deepest = max(deepest, depth) })
	return deepest
}

// JSONStructure calls visit for each structural byte of a JSON text outside
// its strings ({ [ ] } , :) with the nesting depth after it: an opening
// bracket counts itself, a closing one no longer does. It reads b once,
// without recursion, and does not validate it.
func JSONStructure(b []byte, visit func(c byte, depth int)) {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			visit(c, depth)
		case c == ']' || c == '}':
			depth--
			visit(c, depth)
		case c == ',' || c == ':':
			visit(c, depth)
		}
	}
}
