package testsupport

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ProxyMode is what a Proxy does with traffic.
type ProxyMode int32

// Proxy modes.
const (
	// ProxyPass forwards every connection to the database.
	ProxyPass ProxyMode = iota
	// ProxyRefuse closes new connections at once; Cut also closes the
	// existing ones, as when the database goes down.
	ProxyRefuse
	// ProxyBlackHole accepts new connections and never forwards them, and
	// stalls the existing ones, as in a network partition: nothing fails,
	// everything waits for a timeout.
	ProxyBlackHole
)

func (m ProxyMode) String() string {
	switch m {
	case ProxyPass:
		return "pass"
	case ProxyRefuse:
		return "refuse"
	case ProxyBlackHole:
		return "black-hole"
	}
	return fmt.Sprintf("ProxyMode(%d)", int32(m))
}

// ProxyStats count what a Proxy did since it started.
type ProxyStats struct {
	// Accepted counts connection attempts from clients.
	Accepted int64
	// Forwarded counts connections passed on to the database.
	Forwarded int64
	// Refused counts connections closed at once by ProxyRefuse.
	Refused int64
	// BlackHoled counts connections accepted and held by ProxyBlackHole.
	BlackHoled int64
	// Cut counts connections closed by Cut.
	Cut int64
	// Open is the number of connections open now (forwarded or held).
	Open int
}

// Proxy is a TCP proxy between a node and the test PostgreSQL whose
// behaviour can be switched while the node runs: pass, refuse (the database
// is down) or black-hole (the network drops everything). It listens on
// 127.0.0.1 at a free port; its goroutines stop in t.Cleanup.
type Proxy struct {
	t       testing.TB
	ln      net.Listener
	network string // of the database: "tcp" or "unix"
	target  string // the database's address
	url     string

	mu     sync.Mutex
	mode   ProxyMode
	gate   chan struct{} // closed while the mode is pass; stalled pipes wait on it
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted, forwarded, refused, blackHoled, cut atomic.Int64
}

// proxyConn is one client connection and, once forwarded, its database
// connection.
type proxyConn struct {
	client   net.Conn
	mu       sync.Mutex
	upstream net.Conn
	held     bool // accepted in black-hole mode, not forwarded yet
	done     chan struct{}
	once     sync.Once
}

// close closes both ends; it is safe to call more than once.
func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.client.Close()
		c.mu.Lock()
		if c.upstream != nil {
			_ = c.upstream.Close()
		}
		c.mu.Unlock()
	})
}

// NewProxy starts a proxy in front of the database of targetURL (a
// postgres:// URL) and stops it when the test ends.
func NewProxy(t testing.TB, targetURL string) *Proxy {
	t.Helper()
	network, target, err := databaseAddr(targetURL)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listening: %v", err)
	}
	u, err := rewriteURL(targetURL, ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		t.Fatalf("proxy: %v", err)
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{t: t, ln: ln, network: network, target: target, url: u, gate: gate, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// databaseAddr is where the database of rawURL listens.
func databaseAddr(rawURL string) (network, addr string, err error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("parsing %s: %w", rawURL, err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return "unix", filepath.Join(cfg.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.Port))), nil
	}
	return "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// rewriteURL points a postgres:// URL at addr, keeping user, database and
// parameters.
func rewriteURL(rawURL, addr string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("the proxy needs a postgres:// URL, got %q", rawURL)
	}
	q := u.Query()
	q.Del("host")
	q.Del("port")
	u.RawQuery = q.Encode()
	u.Host = addr
	return u.String(), nil
}

// URL is the database URL rewritten to go through the proxy.
func (p *Proxy) URL() string { return p.url }

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode is the current mode.
func (p *Proxy) Mode() ProxyMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return ProxyStats{
		Accepted: p.accepted.Load(), Forwarded: p.forwarded.Load(), Refused: p.refused.Load(),
		BlackHoled: p.blackHoled.Load(), Cut: p.cut.Load(), Open: open,
	}
}

// Cut takes the database away: new connections are closed at once and the
// open ones are closed now.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.setMode(ProxyRefuse)
	open := p.snapshot()
	clear(p.conns) // held connections have no goroutine to forget them
	p.mu.Unlock()
	for _, c := range open {
		p.cut.Add(1)
		c.close()
	}
	p.t.Logf("proxy %s: cut (%d connections closed)", p.Addr(), len(open))
}

// BlackHole makes the database unreachable without failing anything: new
// connections are accepted and never forwarded, open ones stall.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	p.setMode(ProxyBlackHole)
	n := len(p.conns)
	p.mu.Unlock()
	p.t.Logf("proxy %s: black hole (%d connections stalled)", p.Addr(), n)
}

// Restore passes traffic again: stalled connections resume, and
// connections held by the black hole are forwarded now (their clients may
// have given up on them already).
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.setMode(ProxyPass)
	var held []*proxyConn
	for c := range p.conns {
		if c.held {
			c.held = false
			held = append(held, c)
		}
	}
	if !p.closed {
		for _, c := range held {
			p.wg.Add(1)
			go p.serve(c)
		}
	}
	p.mu.Unlock()
	p.t.Logf("proxy %s: restored", p.Addr())
}

// setMode switches the mode and the gate of the pipes. p.mu must be held.
func (p *Proxy) setMode(m ProxyMode) {
	select {
	case <-p.gate: // open
		if m != ProxyPass {
			p.gate = make(chan struct{})
		}
	default:
		if m == ProxyPass {
			close(p.gate)
		}
	}
	p.mode = m
}

// snapshot lists the open connections. p.mu must be held.
func (p *Proxy) snapshot() []*proxyConn {
	out := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.t.Logf("proxy %s: accept: %v", p.Addr(), err)
			}
			return
		}
		p.accepted.Add(1)
		c := &proxyConn{client: client, done: make(chan struct{})}
		p.mu.Lock()
		switch {
		case p.closed || p.mode == ProxyRefuse:
			p.mu.Unlock()
			p.refused.Add(1)
			_ = client.Close()
			continue
		case p.mode == ProxyBlackHole:
			c.held = true
			p.conns[c] = struct{}{}
			p.blackHoled.Add(1)
		default:
			p.conns[c] = struct{}{}
			p.wg.Add(1)
			go p.serve(c)
		}
		p.mu.Unlock()
	}
}

// serve forwards one connection until either end closes it or Cut does.
func (p *Proxy) serve(c *proxyConn) {
	defer p.wg.Done()
	defer p.forget(c)
	up, err := net.DialTimeout(p.network, p.target, 5*time.Second)
	if err != nil {
		p.t.Logf("proxy %s: dialing the database at %s: %v", p.Addr(), p.target, err)
		c.close()
		return
	}
	c.mu.Lock()
	select {
	case <-c.done: // cut while dialing
		c.mu.Unlock()
		_ = up.Close()
		return
	default:
	}
	c.upstream = up
	c.mu.Unlock()
	p.forwarded.Add(1)

	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.pipe(c, up, c.client) }()
	go func() { defer pipes.Done(); p.pipe(c, c.client, up) }()
	pipes.Wait()
}

// pipe copies src to dst, holding each chunk while the proxy black-holes.
// The first end to fail closes both.
func (p *Proxy) pipe(c *proxyConn, dst, src net.Conn) {
	defer c.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitPass(c) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitPass waits until the proxy passes traffic; false when c was closed
// meanwhile.
func (p *Proxy) waitPass(c *proxyConn) bool {
	for {
		p.mu.Lock()
		gate, mode := p.gate, p.mode
		p.mu.Unlock()
		if mode == ProxyPass {
			return true
		}
		select {
		case <-gate:
		case <-c.done:
			return false
		}
	}
}

func (p *Proxy) forget(c *proxyConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// close stops the proxy: no more connections, every open one closed, every
// goroutine finished.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	open := p.snapshot()
	clear(p.conns)
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range open {
		c.close()
	}
	p.wg.Wait()
}
