package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// checkOverhead is what a CheckRequest holds besides its body: Envoy's
// default request header limit (max_request_headers_kb, 60 KiB) plus 4 KiB
// for the other attributes and the protobuf framing. Envoy sends the body
// once, as body or as raw_body (pack_as_bytes), never both, so one body
// and this overhead is the least a receive limit must admit.
const checkOverhead = 64 << 10

// largestBodyLimit is the largest requestBodyLimit of any profile (default
// and named, with defaults applied; values out of range are left to the
// profile's own validation) and the field of the profile that sets it.
func (c Config) largestBodyLimit() (limit int, from string) {
	limit, from = c.DefaultProfile.WithDefaults().RequestBodyLimit, "defaultProfile"
	if limit < 1 || limit > inspector.MaxRequestBodyLimit {
		limit = inspector.DefaultRequestBodyLimit
	}
	for i, p := range c.Profiles {
		l := p.WithDefaults().RequestBodyLimit
		if l > limit && l <= inspector.MaxRequestBodyLimit {
			limit, from = l, fmt.Sprintf("profiles[%d] %q", i, p.Name)
		}
	}
	return limit, from
}

// messageNeed is the smallest gRPC receive limit that admits a check with
// a body at the largest requestBodyLimit of any profile. Below it such
// checks fail with ResourceExhausted before meshwaf sees them, and Envoy
// applies its failure mode: deny, or with failure_mode_allow no inspection.
func (c Config) messageNeed() (need int, from string) {
	limit, from := c.largestBodyLimit()
	return limit + checkOverhead, from
}

// maxMessageBytes is the gRPC receive limit: maxMessageBytes when set, else
// twice the largest body any profile inspects plus 1 MiB (headers, other
// attributes, framing), and at least 4 MiB.
func (c Config) maxMessageBytes() int {
	if c.MaxMessageBytes > 0 {
		return c.MaxMessageBytes
	}
	limit, _ := c.largestBodyLimit()
	return max(minMaxMessageBytes, 2*limit+(1<<20))
}

// reDNSName is a DNS name: dot-separated labels of letters, digits and
// inner hyphens.
var reDNSName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*\.?$`)

// checkAddress accepts a listen address HOST:PORT: HOST empty (every
// interface), an IP address or a DNS name; PORT a number from 0 to 65535.
func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT, e.g. :9000 or 127.0.0.1:9000", addr)
	}
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("port %q is not a number", port)
	}
	if n, err := strconv.ParseUint(port, 10, 64); err != nil || n > 65535 {
		return fmt.Errorf("port %s is not between 0 and 65535", port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 || !reDNSName.MatchString(host) {
		return fmt.Errorf("host %q is not an IP address or DNS name", host)
	}
	return nil
}

// sortByLine orders config errors by their line in the file, keeping the
// order of errors on the same line (and of errors without one).
func sortByLine(errs []error) {
	line := func(e error) int {
		var fe *fielderr.Error
		if errors.As(e, &fe) {
			return fe.Line
		}
		return 0
	}
	slices.SortStableFunc(errs, func(a, b error) int { return line(a) - line(b) })
}
