package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Match returns what the kernel matches for t: the prefix of Address (a /32
// or /128 for a single IP) and its port. An IPv4-mapped IPv6 address
// ("[::ffff:10.0.0.5]:5432") comes back as IPv4, the form the targets map
// holds. The error is nil for any target that passed Validate.
func (t *Target) Match() (netip.Prefix, uint16, error) {
	p, port, err := parseAddress(t.Address)
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("target %q: address: %w", t.Name, err)
	}
	return p, port, nil
}

// parseAddress parses a target address: IP:port or CIDR:port, with IPv6 in
// brackets.
func parseAddress(s string) (netip.Prefix, uint16, error) {
	if s == "" {
		return netip.Prefix{}, 0, errors.New("is empty: want IP:port or CIDR:port, such as 10.20.0.5:5432 or 10.20.0.0/16:5432")
	}
	host, portStr, err := splitHostPort(s, "host:port or CIDR:port", "[fd00::5]:5432, [fd00::/64]:5432")
	if err != nil {
		return netip.Prefix{}, 0, err
	}
	port, err := parsePort(portStr)
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("%q: %w", s, err)
	}
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return netip.Prefix{}, 0, fmt.Errorf("%q: %q is not a CIDR prefix", s, host)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, 0, fmt.Errorf("%q: %s has bits set past the /%d mask: write %s", s, host, p.Bits(), m)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p, port, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if isHostname(host) && strings.ContainsAny(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			return netip.Prefix{}, 0, fmt.Errorf("%q: a host name is not allowed in address, because the kernel matches the IP address a client dials: write that IP (or a CIDR), and put the name in upstream if the agent should resolve it", s)
		}
		return netip.Prefix{}, 0, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, 0, fmt.Errorf("%q: an IPv6 zone is not allowed in address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), port, nil
}

// checkUpstream checks an upstream: host:port, where host is an IP or a name.
func checkUpstream(s string) error {
	host, portStr, err := splitHostPort(s, "host:port", "[fd00::5]:5432")
	if err != nil {
		return err
	}
	if _, err := parsePort(portStr); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	switch {
	case host == "":
		return fmt.Errorf("%q: the host is empty", s)
	case strings.Contains(host, "/"):
		return fmt.Errorf("%q: upstream is one host, not a CIDR", s)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isHostname(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return nil
}

// splitHostPort is net.SplitHostPort with errors that say what to write:
// want is the accepted form, example an IPv6 example of it.
func splitHostPort(s, want, example string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err == nil {
		return host, port, nil
	}
	msg := err.Error()
	var ae *net.AddrError
	if errors.As(err, &ae) {
		msg = ae.Err
	}
	hint := ""
	if !strings.HasPrefix(s, "[") && strings.Count(s, ":") > 1 {
		hint = " (write IPv6 in brackets: " + example + ")"
	}
	return "", "", fmt.Errorf("%q is not %s: %s%s", s, want, msg, hint)
}

// parsePort parses a decimal port in 1..65535.
func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(p), nil
}

// isHostname reports whether s is a syntactically valid DNS name.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
