package pgserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverUser is the system account the server runs as when the launcher runs
// as root: PostgreSQL refuses to run as root.
const serverUser = "postgres"

// account is who runs initdb, pg_ctl and the server. A nil *account is the
// current user.
type account struct {
	name   string
	home   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// serverAccount returns nil when the process may run the server itself, and
// the postgres system account when it runs as root.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and there is no %q system user to run it as (%w): create one (e.g. useradd --system %s) or run as a regular user",
			serverUser, err, serverUser)
	}
	a := &account{name: u.Username, home: u.HomeDir}
	if a.uid, err = parseID(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: %w", serverUser, err)
	}
	if a.gid, err = parseID(u.Gid); err != nil {
		return nil, fmt.Errorf("user %s: %w", serverUser, err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("listing groups of user %s: %w", serverUser, err)
	}
	for _, g := range gids {
		id, err := parseID(g)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", serverUser, err)
		}
		a.groups = append(a.groups, id)
	}
	return a, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parsing id %q: %w", s, err)
	}
	return uint32(n), nil
}

// command prepares program to run as the account, from dir. The command gets
// a process group of its own so that a Ctrl-C meant for the caller does not
// also shut the server down behind its back: the caller stops it in order.
func (a *account) command(ctx context.Context, dir, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Dir = dir
	// pg_ctl start leaves the server running with its output sent to the
	// log file; should anything still hold our pipes, do not wait for it.
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		// PG* variables (PGDATA, PGPORT, PGOPTIONS, ...) would change what
		// the server programs do; everything they need is on the command line.
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		if a != nil && (strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=") || strings.HasPrefix(kv, "LOGNAME=")) {
			continue
		}
		env = append(env, kv)
	}
	if a != nil {
		env = append(env, "HOME="+a.home, "USER="+a.name, "LOGNAME="+a.name)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
	}
	cmd.Env = env
	return cmd
}

// chown gives path to the account; a no-op for the current user.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	if err := os.Chown(path, int(a.uid), int(a.gid)); err != nil {
		return fmt.Errorf("giving %s to user %s: %w", path, a.name, err)
	}
	return nil
}

// checkTraversable makes sure the account can reach dir: every folder above
// it must be searchable by the account. Folders are not opened up on the
// caller's behalf (a chmod of /root would be a surprise); the error says what
// to do instead.
func (a *account) checkTraversable(dir string) error {
	if a == nil {
		return nil
	}
	var above []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		above = append(above, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	// Outermost first: that is the folder to fix first.
	for _, p := range slices.Backward(above) {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if !a.canSearch(fi) {
			return fmt.Errorf("running as root, so PostgreSQL runs as system user %s, which cannot enter %s (mode %s)",
				a.name, p, fi.Mode())
		}
	}
	return nil
}

// placeDataDir returns where the data folder configured as dir lives: dir
// itself when the account can reach it (always, for the current user), else
// a folder under root named after dir, which the account can reach. A
// cluster already in the fallback folder is used there even once dir
// becomes reachable, so a chmod does not silently switch to an empty
// database. create says whether root may be created.
func (a *account) placeDataDir(dir, root string, create bool) (string, error) {
	if a == nil {
		return dir, nil
	}
	fallback := filepath.Join(root, fallbackName(dir))
	if _, err := os.Stat(filepath.Join(fallback, "PG_VERSION")); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
			return fallback, nil
		}
	}
	closed := a.checkTraversable(dir)
	if closed == nil {
		return dir, nil
	}
	if create {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return "", fmt.Errorf("%w; and creating %s for the data folder instead failed: %w", closed, root, err)
		}
	}
	if err := a.checkTraversable(fallback); err != nil {
		return "", fmt.Errorf("%w; and the folder used instead, %s, cannot be reached either: %w", closed, fallback, err)
	}
	return fallback, nil
}

// fallbackName names the fallback data folder of dir: its last two path
// elements, for people, and a digest of the whole path, so that two
// projects never share one.
func fallbackName(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	label := filepath.Base(filepath.Dir(dir)) + "-" + filepath.Base(dir)
	label = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, label)
	if len(label) > 48 {
		label = label[:48]
	}
	return label + "-" + hex.EncodeToString(sum[:6])
}

// canSearch reports whether the account may traverse the folder fi.
func (a *account) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true // not a Unix file system: let the server report trouble
	}
	perm := fi.Mode().Perm()
	if st.Uid == a.uid {
		return perm&0o100 != 0
	}
	if st.Gid == a.gid || slices.Contains(a.groups, st.Gid) {
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}
