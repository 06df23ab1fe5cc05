package inspector

import "strings"

// Coraza puts no limit on request headers or cookies, and every value it
// adds costs the rules tens of kilobytes, as arguments do (bodyguard.go):
// REQUEST_HEADERS and REQUEST_COOKIES are read by about a hundred CRS rules
// each. A Cookie header of 10,000 cookies (89 KB, within Envoy's default
// header limit) allocated 1.17 GB and was allowed. So meshwaf counts them
// first, each against argumentsLimit as Coraza limits each of ARGS_GET and
// ARGS_POST on its own, and does not hand Coraza those over the limit.

// headerExcess says which request headers are over the limit.
type headerExcess int

const (
	headersWithinLimit headerExcess = iota
	cookiesOverLimit                // Cookie headers are not given to Coraza
	headersOverLimit                // no request header is given to Coraza
)

// headerGuard counts, up to limit+1 each, the REQUEST_HEADERS values and
// the REQUEST_COOKIES values Coraza would add for req's headers (and the
// Host header the engine adds when none is given), without allocating.
func headerGuard(req *Request, limit int) headerExcess {
	headers, cookies, hasHost := 0, 0, false
	for _, h := range req.Headers {
		if h.Name == "" {
			continue // Coraza ignores it
		}
		headers++
		switch {
		case strings.EqualFold(h.Name, "host"):
			hasHost = true
		case strings.EqualFold(h.Name, "cookie") && cookies <= limit:
			cookies += countCookies(h.Value, limit-cookies)
		}
	}
	if req.Host != "" && !hasHost {
		headers++
	}
	switch {
	case headers > limit:
		return headersOverLimit
	case cookies > limit:
		return cookiesOverLimit
	}
	return headersWithinLimit
}

// countCookies counts, up to limit+1, the cookies Coraza reads from one
// Cookie header value: the ";"-separated pairs that are not empty once
// ASCII control characters and spaces are trimmed, nor "=" alone.
// FuzzCountCookies checks it against Coraza.
func countCookies(v string, limit int) int {
	n := 0
	for v != "" && n <= limit {
		var part string
		part, v, _ = strings.Cut(v, ";")
		if part = trimCTL(part); part != "" && part != "=" {
			n++
		}
	}
	return min(n, limit+1)
}

// trimCTL trims ASCII control characters and spaces (0x00-0x20, 0x7f).
func trimCTL(s string) string {
	isCTL := func(c byte) bool { return c <= ' ' || c == 0x7f }
	for s != "" && isCTL(s[0]) {
		s = s[1:]
	}
	for s != "" && isCTL(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
