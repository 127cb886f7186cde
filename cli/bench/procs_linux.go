//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The CPU time of a PostgreSQL server on this machine, from /proc: the
// postmaster's own, its children's (the server's background processes and
// one process per session), and that of the children it has reaped
// (sessions that ended).

// userHZ is the unit of the times of /proc/<pid>/stat: Linux reports them
// in USER_HZ, 100 a second, whatever the kernel's tick.
const userHZ = 100

// procClass says whose work a server process does.
type procClass uint8

const (
	procBackground procClass = iota // the server's own processes
	procOurs                        // a session of this database
	procOther                       // a session of another database
)

type procEntry struct {
	start uint64 // start time, ticks after boot: tells a reused pid
	cpu   time.Duration
	class procClass
}

// procSnapshot is the CPU time of a server's processes at one moment.
type procSnapshot struct {
	postmaster int
	// self is the postmaster's CPU; reaped its children's that ended.
	self, reaped time.Duration
	procs        map[int]procEntry
}

// procStat is what the report needs of /proc/<pid>/stat.
type procStat struct {
	comm       string
	ppid       int
	cpu        time.Duration // utime + stime
	childCPU   time.Duration // cutime + cstime
	startTicks uint64
}

func readProcStat(pid int) (procStat, error) {
	var st procStat
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return st, err
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return st, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	st.comm = string(b[open+1 : end])
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 20 {
		return st, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	num := func(field int) uint64 {
		v, perr := strconv.ParseUint(f[field-3], 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("/proc/%d/stat field %d: %w", pid, field, perr)
		}
		return v
	}
	ticks := func(v uint64) time.Duration { return time.Duration(v) * time.Second / userHZ }
	st.ppid = int(num(4))
	st.cpu = ticks(num(14) + num(15))
	st.childCPU = ticks(num(16) + num(17))
	st.startTicks = num(22)
	return st, err
}

// bootTime is when the machine booted, from /proc/stat.
func bootTime() (time.Time, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	defer func() { _ = f.Close() }() // read only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("/proc/stat btime: %w", err)
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}

// localSlack is how far a session's start may be from its process's start
// for the process to be the session's: /proc counts in ticks, the boot
// time in seconds.
const localSlack = 2 * time.Second

// processes reads the CPU time of the server's processes, when the server
// runs on this machine: when the process of the pid the session reports
// runs postgres and started when the session did.
func (db *database) processes(ctx context.Context) (procSnapshot, error) {
	var (
		pid         int
		startMicros int64
	)
	if err := db.pool.QueryRow(ctx, sqlBackend).Scan(&pid, &startMicros); err != nil {
		return procSnapshot{}, fmt.Errorf("reading the session's server process: %w", err)
	}
	notHere := fmt.Errorf("the server is not on this machine (no process %d of its session here)", pid)
	st, err := readProcStat(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return procSnapshot{}, notHere
		}
		return procSnapshot{}, fmt.Errorf("reading the server's processes: %w", err)
	}
	boot, err := bootTime()
	if err != nil {
		return procSnapshot{}, fmt.Errorf("reading the server's processes: %w", err)
	}
	began := boot.Add(time.Duration(st.startTicks) * time.Second / userHZ)
	if d := began.Sub(time.UnixMicro(startMicros)); st.comm != "postgres" || d > localSlack || d < -localSlack {
		return procSnapshot{}, notHere
	}
	return db.processesOf(ctx, st.ppid)
}

// processesOf reads the CPU time of the postmaster and its children.
func (db *database) processesOf(ctx context.Context, postmaster int) (procSnapshot, error) {
	s := procSnapshot{postmaster: postmaster, procs: map[int]procEntry{}}
	rows, err := db.pool.Query(ctx, sqlSessions)
	if err != nil {
		return s, fmt.Errorf("reading pg_stat_activity: %w", err)
	}
	classes := map[int]procClass{}
	for rows.Next() {
		var (
			pid  int
			ours *bool
		)
		if err := rows.Scan(&pid, &ours); err != nil {
			rows.Close()
			return s, fmt.Errorf("reading pg_stat_activity: %w", err)
		}
		switch {
		case ours == nil:
			classes[pid] = procBackground
		case *ours:
			classes[pid] = procOurs
		default:
			classes[pid] = procOther
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("reading pg_stat_activity: %w", err)
	}
	pm, err := readProcStat(postmaster)
	if err != nil {
		return s, fmt.Errorf("reading the postmaster's CPU time: %w", err)
	}
	s.self, s.reaped = pm.cpu, pm.childCPU
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return s, fmt.Errorf("reading the server's processes: %w", err)
	}
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != postmaster {
			continue // gone meanwhile, or not the server's
		}
		s.procs[pid] = procEntry{start: st.startTicks, cpu: st.cpu, class: classes[pid]}
	}
	return s, nil
}

// since is the CPU the server used from before to s.
func (s procSnapshot) since(before procSnapshot) cpuUse {
	var u cpuUse
	u.counted = s.self - before.self
	for pid, e := range s.procs {
		d := e.cpu
		if b, ok := before.procs[pid]; ok && b.start == e.start {
			d -= b.cpu
		}
		if e.class == procOther {
			u.others += d
		} else {
			u.counted += d
		}
	}
	// The reaped children's CPU grew by the whole lives of those that
	// ended; the part before the run is in before.
	u.ended = s.reaped - before.reaped
	for pid, b := range before.procs {
		if e, ok := s.procs[pid]; !ok || e.start != b.start {
			u.ended -= b.cpu
		}
	}
	u.ended = max(0, u.ended)
	return u
}
