package pgserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// hbaFileName is the server's client authentication file in the data folder.
const hbaFileName = "pg_hba.conf"

// hbaRules are the embedded server's client authentication rules: its
// socket is in a folder only the server's account can enter, so whoever
// reaches the socket is that account (or root) and is trusted; TCP is
// refused whatever the listener.
const hbaRules = `# Tasker's embedded PostgreSQL: the unix socket lives in a folder only the
# server's account can enter, and is trusted; every TCP connection is refused.
local   all   all         trust
host    all   all   all   reject
`

// secureHBAFile rewrites pg_hba.conf to hbaRules when it trusts any TCP
// connection, as clusters made by earlier versions did, keeping the old file
// as pg_hba.conf.trusted-tcp. It reports whether it rewrote the file; a
// server already running must then reload it.
func (s *Server) secureHBAFile() (bool, error) {
	path := filepath.Join(s.dataDir, hbaFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // no cluster yet; initdb writes the rules
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if !trustsTCP(string(b)) {
		return false, nil
	}
	if err := os.WriteFile(path+".trusted-tcp", b, 0o600); err != nil {
		return false, fmt.Errorf("keeping the old %s: %w", path, err)
	}
	if err := s.acct.chown(path + ".trusted-tcp"); err != nil {
		return false, err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(hbaRules), 0o600); err != nil {
		return false, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := s.acct.chown(tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("replacing %s: %w", path, err)
	}
	s.logger.Warn("the embedded PostgreSQL trusted TCP connections from any local user; it now trusts only its socket",
		"file", path, "old_file", path+".trusted-tcp")
	return true, nil
}

// trustsTCP reports whether a pg_hba.conf has a host rule (host, hostssl,
// hostnossl, hostgssenc, hostnogssenc) with the trust method.
func trustsTCP(conf string) bool {
	for line := range strings.Lines(conf) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "host") {
			continue
		}
		// host DATABASE USER ADDRESS [MASK] METHOD [OPTIONS]: the method is
		// the first field after the address (and mask) that names one.
		for _, v := range f[3:] {
			if v == "trust" {
				return true
			}
		}
	}
	return false
}
