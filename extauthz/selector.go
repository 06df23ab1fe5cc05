package extauthz

import (
	"errors"
	"regexp"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Match says which checks a profile takes. Selection rests on what the
// caller cannot forge: the destination workload's SPIFFE identity, which
// the mesh sets. Hosts only narrow an identity match: the Host header is
// chosen by the caller, so it never selects a profile on its own.
type Match struct {
	// Namespaces match the namespace of the destination principal.
	Namespaces []string `yaml:"namespaces,omitempty" json:"namespaces,omitempty"`
	// ServiceAccounts match "<namespace>/<service account>" of the
	// destination principal; they win over Namespaces.
	ServiceAccounts []string `yaml:"serviceAccounts,omitempty" json:"serviceAccounts,omitempty"`
	// Hosts narrow the Namespaces and ServiceAccounts of the same match
	// to requests whose Host (without port) is one of them, exactly or,
	// with a leading "*.", by suffix. Hosts without Namespaces or
	// ServiceAccounts are an error.
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
	byAccount  map[string]*identityRule // "ns/sa"
	byNS       map[string]*identityRule
	defProfile string
}

// identityRule is what one destination identity selects: a profile per
// exact host, per host suffix, and a profile for any host.
type identityRule struct {
	byHost   map[string]string
	bySuffix []hostSuffix // in configuration order
	any      string       // "" when no profile names the identity without hosts
}

type hostSuffix struct{ suffix, profile string }

// profile returns the profile for host (lower case, no port): exact host,
// then the longest matching suffix, then the identity's profile for any
// host; "" when none applies.
func (r *identityRule) profile(host string) string {
	if r == nil {
		return ""
	}
	if host != "" {
		if p, ok := r.byHost[host]; ok {
			return p
		}
		best := -1
		for i, hs := range r.bySuffix {
			if strings.HasSuffix(host, hs.suffix) && (best < 0 || len(hs.suffix) > len(r.bySuffix[best].suffix)) {
				best = i
			}
		}
		if best >= 0 {
			return r.bySuffix[best].profile
		}
	}
	return r.any
}

var (
	reDNSLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	reHost     = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// NewSelector builds a selector over the known profile names. Every error
// is reported, each an *inspector.ProfileError naming the profile, whose
// Err is a *fielderr.Error at match.<field> (or, for an unknown profile, at
// no field): unknown profiles, invalid names, hosts without an identity and
// the same key (identity, or identity and host) claimed by two profiles.
// Messages quote values as written.
func NewSelector(defaultProfile string, known []string, matches []ProfileMatch) (*Selector, error) {
	s := &Selector{known: map[string]bool{}, byAccount: map[string]*identityRule{}, byNS: map[string]*identityRule{},
		defProfile: defaultProfile}
	for _, k := range known {
		s.known[k] = true
	}
	var errs []error
	for _, pm := range matches {
		if !s.known[pm.Profile] {
			errs = append(errs, &inspector.ProfileError{Profile: pm.Profile, Err: errors.New("no such profile")})
			continue
		}
		if err := s.add(pm); err != nil {
			errs = append(errs, &inspector.ProfileError{Profile: pm.Profile, Err: err})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// matchHost is a host of a Match: the key it is selected by (lower case), and
// the value as written, for messages.
type matchHost struct{ key, written string }

// add records what pm takes; its errors are at match.<field>.
func (s *Selector) add(pm ProfileMatch) error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fielderr.Errorf(fielderr.At("match", field), format, args...))
	}
	var hosts []matchHost
	for _, h := range pm.Match.Hosts {
		if !reHost.MatchString(strings.ToLower(h)) {
			fail("hosts", "%q is not a host name or *.suffix", h)
			continue
		}
		hosts = append(hosts, matchHost{key: strings.ToLower(h), written: h})
	}
	if len(pm.Match.Hosts) > 0 && len(pm.Match.Namespaces)+len(pm.Match.ServiceAccounts) == 0 {
		fail("hosts", "needs match.namespaces or match.serviceAccounts: the caller chooses the Host, so hosts only narrow a destination identity")
	}
	for _, ns := range pm.Match.Namespaces {
		if !reDNSLabel.MatchString(ns) {
			fail("namespaces", "%q is not a namespace name", ns)
			continue
		}
		claimIdentity(s.byNS, ns, hosts, pm.Profile, "namespaces", fail)
	}
	for _, a := range pm.Match.ServiceAccounts {
		ns, sa, ok := strings.Cut(a, "/")
		if !ok || !reDNSLabel.MatchString(ns) || !validSA(sa) {
			fail("serviceAccounts", "%q is not <namespace>/<service account>", a)
			continue
		}
		claimIdentity(s.byAccount, a, hosts, pm.Profile, "serviceAccounts", fail)
	}
	return errors.Join(errs...)
}

// claimIdentity records that profile takes identity id, for any host or
// for each of hosts, and reports a key another profile already holds.
func claimIdentity(m map[string]*identityRule, id string, hosts []matchHost, profile, field string,
	fail func(field, format string, args ...any)) {
	r := m[id]
	if r == nil {
		r = &identityRule{byHost: map[string]string{}}
		m[id] = r
	}
	if len(hosts) == 0 {
		if r.any != "" && r.any != profile {
			fail(field, "%q is already matched by profile %q", id, r.any)
			return
		}
		r.any = profile
		return
	}
	for _, h := range hosts {
		if suffix, ok := strings.CutPrefix(h.key, "*"); ok {
			for _, hs := range r.bySuffix {
				if hs.suffix == suffix && hs.profile != profile {
					fail("hosts", "%q of %q is already matched by profile %q", h.written, id, hs.profile)
				}
			}
			r.bySuffix = append(r.bySuffix, hostSuffix{suffix: suffix, profile: profile})
			continue
		}
		if other, ok := r.byHost[h.key]; ok && other != profile {
			fail("hosts", "%q of %q is already matched by profile %q", h.written, id, other)
			continue
		}
		r.byHost[h.key] = profile
	}
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
// `meshwaf-profile` context extension (set per route by the mesh operator,
// when it names a known profile); the destination's service account, then
// its namespace, each narrowed by Host where the matching profiles name
// hosts (exact host, then the longest "*." suffix, then the profile that
// names the identity without hosts); else the default. The Host alone
// never selects a profile: the caller chooses it. A nil Selector selects
// the default ("").
func (s *Selector) Select(h ProfileHint) string {
	if s == nil {
		return ""
	}
	if h.Extension != "" && s.known[h.Extension] {
		return h.Extension
	}
	id := h.Destination
	if id.Namespace == "" || id.ServiceAccount == "" {
		return s.defProfile
	}
	if p := s.byAccount[id.Namespace+"/"+id.ServiceAccount].profile(h.Host); p != "" {
		return p
	}
	if p := s.byNS[id.Namespace].profile(h.Host); p != "" {
		return p
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
