package inspector

import "strings"

// Hostname returns a Host or :authority value without its port and without
// the brackets of an IPv6 literal: "a.b:8080" -> "a.b", "[::1]:8080" ->
// "::1". A value with more than one colon and no brackets is a bare IPv6
// address and is returned whole. Case is kept. It is the one place meshwaf
// cuts a port off a host.
func Hostname(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

// AddHostHeader sets r.Host and appends a "host" header carrying it unless
// r.Headers already has one. Builders of a Request call it: it is the one
// place a Host header is made from an authority (Envoy's :authority, a URL,
// an HTTP/1 request line's Host). An empty host still gives an empty header,
// which CRS tells from a missing one (920290, 920280).
func (r *Request) AddHostHeader(host string) {
	r.Host = host
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, "host") {
			return
		}
	}
	r.Headers = append(r.Headers, Header{Name: "host", Value: host})
}
