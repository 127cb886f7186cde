package pgserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// pidFileName is the lock file a running postmaster keeps in its data folder.
const pidFileName = "postmaster.pid"

// postmaster is what postmaster.pid says about the server owning a data
// folder. The file's lines are: pid, data folder, start time, port, first
// socket folder, first listen address, shared memory key, status.
type postmaster struct {
	pid       int
	port      int
	socketDir string // empty when the server has no unix socket
	listen    string // the first TCP listen address; empty when none
	status    string // "starting", "ready", "stopping", "standby"; may be empty early on
}

// readPostmaster reads dataDir's postmaster.pid; ok is false when there is
// none.
func readPostmaster(dataDir string) (pm postmaster, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dataDir, pidFileName))
	if errors.Is(err, os.ErrNotExist) {
		return postmaster{}, false, nil
	}
	if err != nil {
		return postmaster{}, false, fmt.Errorf("reading %s: %w", pidFileName, err)
	}
	lines := strings.Split(string(b), "\n")
	line := func(i int) string {
		if i < len(lines) {
			return strings.TrimSpace(lines[i])
		}
		return ""
	}
	pm.pid, err = strconv.Atoi(line(0))
	if err != nil || pm.pid <= 0 {
		return postmaster{}, false, fmt.Errorf("reading %s: bad pid line %q", pidFileName, line(0))
	}
	// The port line may be missing while the server is still starting.
	pm.port, _ = strconv.Atoi(line(3))
	pm.socketDir, pm.listen = line(4), line(5)
	pm.status = line(7)
	return pm, true, nil
}

// alive reports whether the pid still names a running postgres. A process
// that does not exist, a zombie, or (on Linux) a process of another program
// that reused the pid after a crash or reboot is not.
func (pm postmaster) alive() bool {
	if err := syscall.Kill(pm.pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pm.pid)); err == nil {
		// Format: pid (comm) state ...; comm may contain spaces and parentheses.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
			rest := strings.Fields(string(stat[i+1:]))
			if len(rest) > 0 && (rest[0] == "Z" || rest[0] == "X") {
				return false
			}
		}
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pm.pid)); err == nil {
		return filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "postgres"
	}
	return true // no /proc, or not ours to inspect: trust the signal check
}
