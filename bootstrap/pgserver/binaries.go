package pgserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverPrograms are the programs the launcher runs. pg_ctl starts postgres
// from its own folder, so all three must live side by side.
var serverPrograms = []string{"initdb", "pg_ctl", "postgres"}

// defaultSearchGlobs are where distributions put the server binaries when
// they keep them off PATH: Debian and Ubuntu, then RHEL and Fedora (PGDG).
var defaultSearchGlobs = []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"}

// errNoBinaries is the advice given when no server binaries can be found.
var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or " +
	strings.Join(defaultSearchGlobs, " or ") +
	": install them (e.g. apt-get install postgresql), set the bin folder explicitly, or configure a database URL")

// binaries is a folder holding initdb, pg_ctl and postgres.
type binaries struct {
	dir string
}

func (b binaries) path(program string) string { return filepath.Join(b.dir, program) }

// findBinaries picks the folder of the server binaries. An explicit dir is
// the only place looked at. Otherwise the folder of pg_ctl found through
// lookPath comes first, then the newest folder matching one of globs.
func findBinaries(dir string, lookPath func(string) (string, error), globs []string) (binaries, error) {
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return binaries{}, fmt.Errorf("resolving PostgreSQL bin folder %s: %w", dir, err)
		}
		if missing := missingPrograms(abs); len(missing) > 0 {
			return binaries{}, fmt.Errorf("PostgreSQL server binaries (%s) not found in %s: install them (e.g. apt-get install postgresql) or point the bin folder at them",
				strings.Join(missing, ", "), abs)
		}
		return binaries{dir: abs}, nil
	}
	if p, err := lookPath("pg_ctl"); err == nil {
		// Follow symlinks: /usr/local/bin/pg_ctl may point into the real
		// bin folder, which is where initdb and postgres live.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if d := filepath.Dir(p); len(missingPrograms(d)) == 0 {
			return binaries{dir: d}, nil
		}
	}
	for _, g := range globs {
		matches, _ := filepath.Glob(g) // the patterns are constant and valid
		sortNewestFirst(matches)
		for _, d := range matches {
			if len(missingPrograms(d)) == 0 {
				return binaries{dir: d}, nil
			}
		}
	}
	return binaries{}, errNoBinaries
}

// missingPrograms lists the server programs that dir lacks.
func missingPrograms(dir string) []string {
	var missing []string
	for _, p := range serverPrograms {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	return missing
}

// sortNewestFirst orders folders such as /usr/lib/postgresql/9.6/bin and
// /usr/lib/postgresql/16/bin by the version number in their path, newest
// first.
func sortNewestFirst(dirs []string) {
	version := func(d string) []int {
		var v []int
		for _, part := range strings.FieldsFunc(d, func(r rune) bool { return r < '0' || r > '9' }) {
			n, _ := strconv.Atoi(part)
			v = append(v, n)
		}
		return v
	}
	sort.SliceStable(dirs, func(i, j int) bool {
		a, b := version(dirs[i]), version(dirs[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
}
