package extauthz

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Match says which checks a profile takes, by the destination workload's
// SPIFFE identity or by Host.
type Match struct {
	// Namespaces match the namespace of the destination principal.
	Namespaces []string `yaml:"namespaces,omitempty" json:"namespaces,omitempty"`
	// ServiceAccounts match "<namespace>/<service account>" of the
	// destination principal; they win over Namespaces.
	ServiceAccounts []string `yaml:"serviceAccounts,omitempty" json:"serviceAccounts,omitempty"`
	// Hosts match the request's Host without port, exactly or, with a
	// leading "*.", by suffix.
	Hosts []string `yaml:"hosts,omitempty" json:"hosts,omitempty"`
}

// ProfileMatch binds a Match to a profile name.
type ProfileMatch struct {
	Profile string
	Match   Match
}

// Selector chooses the profile of a check. It is immutable and safe for
// concurrent use.
type Selector struct {
	known      map[string]bool
	byAccount  map[string]string // "ns/sa" -> profile
	byNS       map[string]string
	byHost     map[string]string
	bySuffix   []hostSuffix // in configuration order
	defProfile string
}

type hostSuffix struct{ suffix, profile string }

var (
	reDNSLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	reHost     = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// NewSelector builds a selector over the known profile names. Every error
// is reported, located as "profile <name>: match.<field>": unknown
// profiles, invalid names and the same key claimed by two profiles.
func NewSelector(defaultProfile string, known []string, matches []ProfileMatch) (*Selector, error) {
	s := &Selector{known: map[string]bool{}, byAccount: map[string]string{}, byNS: map[string]string{},
		byHost: map[string]string{}, defProfile: defaultProfile}
	for _, k := range known {
		s.known[k] = true
	}
	var errs []error
	fail := func(pm ProfileMatch, field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("profile %q: match.%s: %s", pm.Profile, field, fmt.Sprintf(format, args...)))
	}
	claim := func(m map[string]string, key string, pm ProfileMatch, field string) {
		if other, ok := m[key]; ok && other != pm.Profile {
			fail(pm, field, "%q is already matched by profile %q", key, other)
			return
		}
		m[key] = pm.Profile
	}
	for _, pm := range matches {
		if !s.known[pm.Profile] {
			errs = append(errs, fmt.Errorf("profile %q: no such profile", pm.Profile))
			continue
		}
		for _, ns := range pm.Match.Namespaces {
			if !reDNSLabel.MatchString(ns) {
				fail(pm, "namespaces", "%q is not a namespace name", ns)
				continue
			}
			claim(s.byNS, ns, pm, "namespaces")
		}
		for _, a := range pm.Match.ServiceAccounts {
			ns, sa, ok := strings.Cut(a, "/")
			if !ok || !reDNSLabel.MatchString(ns) || !validSA(sa) {
				fail(pm, "serviceAccounts", "%q is not <namespace>/<service account>", a)
				continue
			}
			claim(s.byAccount, a, pm, "serviceAccounts")
		}
		for _, h := range pm.Match.Hosts {
			h = strings.ToLower(h)
			if !reHost.MatchString(h) {
				fail(pm, "hosts", "%q is not a host name or *.suffix", h)
				continue
			}
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				for _, hs := range s.bySuffix {
					if hs.suffix == suffix && hs.profile != pm.Profile {
						fail(pm, "hosts", "%q is already matched by profile %q", h, hs.profile)
					}
				}
				s.bySuffix = append(s.bySuffix, hostSuffix{suffix: suffix, profile: pm.Profile})
				continue
			}
			claim(s.byHost, h, pm, "hosts")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func validSA(sa string) bool {
	// Service account names are DNS subdomains.
	if sa == "" || len(sa) > 253 {
		return false
	}
	for _, l := range strings.Split(sa, ".") {
		if !reDNSLabel.MatchString(l) {
			return false
		}
	}
	return true
}

// Select returns the profile for a check, in this order: the
// `meshwaf-profile` context extension (when it names a known profile), the
// destination principal's service account, then its namespace, then the
// Host (exact before suffix, longest suffix first in configuration order),
// else the default. A nil Selector selects the default ("").
func (s *Selector) Select(req *authv3.CheckRequest) string {
	if s == nil {
		return ""
	}
	attrs := req.GetAttributes()
	if p := attrs.GetContextExtensions()[ContextKeyProfile]; p != "" && s.known[p] {
		return p
	}
	if ns, sa, ok := spiffeIdentity(attrs.GetDestination().GetPrincipal()); ok {
		if p, ok := s.byAccount[ns+"/"+sa]; ok {
			return p
		}
		if p, ok := s.byNS[ns]; ok {
			return p
		}
	}
	host := attrs.GetRequest().GetHttp().GetHost()
	if host == "" {
		host = attrs.GetRequest().GetHttp().GetHeaders()[":authority"]
	}
	if host = hostOnly(host); host != "" {
		if p, ok := s.byHost[host]; ok {
			return p
		}
		best := -1
		for i, hs := range s.bySuffix {
			if strings.HasSuffix(host, hs.suffix) && (best < 0 || len(hs.suffix) > len(s.bySuffix[best].suffix)) {
				best = i
			}
		}
		if best >= 0 {
			return s.bySuffix[best].profile
		}
	}
	return s.defProfile
}

// spiffeIdentity parses spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func spiffeIdentity(principal string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return "", "", false
	}
	return parts[2], parts[4], true
}

// hostOnly lower-cases a Host value and strips its port.
func hostOnly(h string) string {
	h = strings.ToLower(h)
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}
