package console

import (
	"net"
	"slices"
	"strings"
)

// hostAllowed reports whether a request's Host header names the console:
// a loopback name or address, or one of Options.Hosts. A page of another
// site that resolves its own name to 127.0.0.1 (DNS rebinding) sends its
// own name, and is refused.
func (c *Console) hostAllowed(hostport string) bool {
	if c.o.AnyHost {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	return host != "" && slices.ContainsFunc(c.o.Hosts, func(h string) bool { return strings.EqualFold(h, host) })
}
