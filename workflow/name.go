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
