package handlers

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The destination policy of the http handler: an address in a range that
// reaches this machine or its private network (loopback, link-local and so
// the cloud metadata service, private, shared, unspecified, multicast) is
// called only when allowed_hosts lists it. The check runs on the address a
// connection is made to, after DNS resolution, so a name that resolves (or
// rebinds) to such an address is refused too; redirects go through the same
// dialer.

// AllowedHosts is a parsed allowed_hosts list. The zero value (and nil)
// allows nothing beyond public addresses.
type AllowedHosts struct {
	names   map[string]bool // "host" or "host:port", lower case, no trailing dot
	addrs   []allowedAddr
	entries []string // canonical, sorted: the key of the list
}

// allowedAddr is an IP or CIDR entry, with a port or "" for any port.
type allowedAddr struct {
	prefix netip.Prefix
	port   string
}

// ParseAllowedHosts parses allowed_hosts entries: a host name
// ("internal.example"), a host name and port ("internal.example:8080"), an
// IP ("127.0.0.1", "::1"), an IP and port ("127.0.0.1:8080",
// "[::1]:8080") or a CIDR ("10.0.0.0/8", "fc00::/7"). A name matches the
// URL's host as written (any address it resolves to is then allowed); an IP
// or CIDR matches the address connected to. The error names the entry by
// its index.
func ParseAllowedHosts(entries []string) (*AllowedHosts, error) {
	a := &AllowedHosts{names: map[string]bool{}}
	for i, e := range entries {
		if err := a.add(e); err != nil {
			return nil, fmt.Errorf("[%d] %w", i, err)
		}
	}
	slices.Sort(a.entries)
	a.entries = slices.Compact(a.entries)
	return a, nil
}

// ParseAllowedHost checks one allowed_hosts entry; see ParseAllowedHosts.
func ParseAllowedHost(entry string) error {
	return (&AllowedHosts{names: map[string]bool{}}).add(entry)
}

func (a *AllowedHosts) add(entry string) error {
	e := strings.TrimSpace(entry)
	switch {
	case e == "":
		return fmt.Errorf("%q is empty: give a host name, host:port, an IP or a CIDR", entry)
	case strings.Contains(e, "*"):
		return fmt.Errorf("%q: wildcards are not supported; list host names, IPs or CIDRs such as \"10.0.0.0/8\"", entry)
	case strings.Contains(e, "/"):
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR such as \"10.0.0.0/8\" or \"fc00::/7\"", entry)
		}
		a.addAddr(p.Masked(), "")
		return nil
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")); err == nil {
		return a.addIP(entry, ip, "")
	}
	host, port := e, ""
	if h, p, err := net.SplitHostPort(e); err == nil {
		n, perr := strconv.Atoi(p)
		if perr != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return fmt.Errorf("%q: port %q is not a number from 1 to 65535", entry, p)
		}
		host, port = h, p
	} else if strings.Contains(e, ":") {
		return fmt.Errorf("%q is neither host, host:port, an IP nor a CIDR (an IPv6 address with a port is written [::1]:8080)", entry)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return a.addIP(entry, ip, port)
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if !validHostName(name) {
		return fmt.Errorf("%q: %q is not a host name (letters, digits, '-', '_' and '.')", entry, host)
	}
	key := name
	if port != "" {
		key = net.JoinHostPort(name, port)
	}
	a.names[key] = true
	a.entries = append(a.entries, key)
	return nil
}

func (a *AllowedHosts) addIP(entry string, ip netip.Addr, port string) error {
	if ip.Zone() != "" {
		return fmt.Errorf("%q: an address with a zone is not supported", entry)
	}
	ip = ip.Unmap()
	a.addAddr(netip.PrefixFrom(ip, ip.BitLen()), port)
	return nil
}

func (a *AllowedHosts) addAddr(p netip.Prefix, port string) {
	a.addrs = append(a.addrs, allowedAddr{prefix: p, port: port})
	s := p.String()
	if p.IsSingleIP() {
		s = p.Addr().String()
	}
	if port != "" {
		s = net.JoinHostPort(s, port)
	}
	a.entries = append(a.entries, s)
}

func validHostName(name string) bool {
	if name == "" || len(name) > 253 || strings.HasPrefix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// union is a list allowing what a or b allows.
func (a *AllowedHosts) union(b *AllowedHosts) *AllowedHosts {
	out := &AllowedHosts{names: map[string]bool{}}
	for _, x := range []*AllowedHosts{a, b} {
		if x == nil {
			continue
		}
		for k := range x.names {
			out.names[k] = true
		}
		out.addrs = append(out.addrs, x.addrs...)
		out.entries = append(out.entries, x.entries...)
	}
	slices.Sort(out.entries)
	out.entries = slices.Compact(out.entries)
	return out
}

// key identifies the list: two lists with the same key allow the same.
func (a *AllowedHosts) key() string {
	if a == nil {
		return ""
	}
	return strings.Join(a.entries, ",")
}

// allowsName reports whether the URL host host (with its port) is listed
// by name.
func (a *AllowedHosts) allowsName(host, port string) bool {
	if a == nil {
		return false
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	return a.names[name] || a.names[net.JoinHostPort(name, port)]
}

// allowsAddr reports whether ip (and port) is listed by address or CIDR.
func (a *AllowedHosts) allowsAddr(ip netip.Addr, port string) bool {
	if a == nil {
		return false
	}
	ip = ip.Unmap()
	for _, e := range a.addrs {
		if e.prefix.Contains(ip) && (e.port == "" || e.port == port) {
			return true
		}
	}
	return false
}

var (
	sharedRange   = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork   = netip.MustParsePrefix("0.0.0.0/8")
	nat64Range    = netip.MustParsePrefix("64:ff9b::/96")
	broadcastAddr = netip.MustParseAddr("255.255.255.255")
	metadataAddr  = netip.MustParseAddr("169.254.169.254")
)

// DeniedRange names the range the policy denies ip by default for ("" when
// ip is a public address): "loopback", "link-local", "private" (RFC 1918,
// fc00::/7), "shared" (100.64.0.0/10), "unspecified", "broadcast" or
// "multicast". An IPv4 address mapped into IPv6 or NAT64 counts as itself.
func DeniedRange(ip netip.Addr) string {
	ip = ip.Unmap()
	if nat64Range.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:16]))
	}
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return "unspecified"
	case ip == metadataAddr:
		return "link-local (cloud metadata)"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	case ip.IsPrivate():
		return "private"
	case sharedRange.Contains(ip):
		return "shared"
	case ip == broadcastAddr:
		return "broadcast"
	}
	return ""
}

// DestinationError is a destination the policy refused: Host as the URL
// names it, IP the address it is or resolves to, Range the rule.
type DestinationError struct {
	Host  string
	IP    netip.Addr
	Port  string
	Range string
}

func (e *DestinationError) Error() string {
	ip := e.IP.String()
	if strings.Trim(e.Host, "[]") == ip {
		return fmt.Sprintf("destination %s refused: %s is a %s address", net.JoinHostPort(ip, e.Port), ip, e.Range)
	}
	return fmt.Sprintf("destination %s refused: %s resolves to %s, a %s address", net.JoinHostPort(e.Host, e.Port), e.Host, ip, e.Range)
}

// suggestion is the allowed_hosts entry that would allow the destination.
func (e *DestinationError) suggestion() string {
	if h := strings.Trim(e.Host, "[]"); h != e.IP.String() {
		return h
	}
	return e.IP.String()
}

// RedirectError is a redirect the policy refused.
type RedirectError struct {
	From, To string // without query or user info
	Reason   string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("redirect from %s to %s refused: %s", e.From, e.To, e.Reason)
}

// checkAddr is the dial-time check of the address (ip:port) a connection
// to host is about to be made to.
func (a *AllowedHosts) checkAddr(host, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("destination %s refused: cannot read the address %q", host, address)
	}
	port := strconv.Itoa(int(ap.Port()))
	if r := DeniedRange(ap.Addr()); r != "" && !a.allowsAddr(ap.Addr(), port) {
		return &DestinationError{Host: host, IP: ap.Addr().Unmap(), Port: port, Range: r}
	}
	return nil
}

// dialer returns a DialContext that applies the policy: a host listed by
// name is dialled as it is; any other connection is checked on the address
// it is made to, after resolution.
func (a *AllowedHosts) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		if !a.allowsName(host, port) {
			d.Control = func(_, address string, _ syscall.RawConn) error {
				return a.checkAddr(host, address)
			}
		}
		return d.DialContext(ctx, network, addr)
	}
}

// checkRedirect follows at most maxRedirects redirects, only to http or
// https, never from https to http, and not to a literal address the policy
// denies (a name is checked when it is dialled).
func (a *AllowedHosts) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects: %w", len(via), errTooManyRedirects)
	}
	prev := via[len(via)-1].URL
	to := req.URL
	refuse := func(reason string) error {
		return &RedirectError{From: redacted(prev), To: redacted(to), Reason: reason}
	}
	switch {
	case to.Scheme != "http" && to.Scheme != "https":
		return refuse("only http and https are followed")
	case prev.Scheme == "https" && to.Scheme == "http":
		return refuse("https to http would send the request in clear text")
	}
	if ip, err := netip.ParseAddr(to.Hostname()); err == nil {
		port := to.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[to.Scheme]
		}
		if r := DeniedRange(ip); r != "" && !a.allowsAddr(ip, port) {
			return &DestinationError{Host: to.Hostname(), IP: ip.Unmap(), Port: port, Range: r}
		}
	}
	return nil
}

// redacted is u without user info, query or fragment, which may hold
// credentials.
func redacted(u *url.URL) string {
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return c.String()
}
