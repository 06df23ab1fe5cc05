package istiotest

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacRequest is what Envoy's RBAC matcher sees of one request on an
// inbound chain: the peer's mTLS identity and, on HTTP chains, the method
// and path. A TCP connection has no method and path.
type rbacRequest struct {
	principal string // "spiffe://td/ns/x/sa/y"
	port      int
	method    string
	path      string
}

// rbacAllows evaluates enforced RBAC configurations the way Envoy's RBAC
// filters do: every filter must let the request through; an ALLOW filter
// lets it through when some policy matches, a DENY filter when none does.
// A matcher this evaluator does not know is an error, never a guess.
func rbacAllows(rbacs []*rbacv3.RBAC, req rbacRequest) (bool, error) {
	for _, r := range rbacs {
		matched := false
		for _, name := range sortedKeys(r.GetPolicies()) {
			p := r.GetPolicies()[name]
			ok, err := policyMatches(p, req)
			if err != nil {
				return false, fmt.Errorf("policy %s: %w", name, err)
			}
			if ok {
				matched = true
				break
			}
		}
		switch r.GetAction() {
		case rbacv3.RBAC_ALLOW:
			if !matched {
				return false, nil
			}
		case rbacv3.RBAC_DENY:
			if matched {
				return false, nil
			}
		default:
			return false, fmt.Errorf("RBAC action %v in an enforced filter", r.GetAction())
		}
	}
	return true, nil
}

// policyMatches: some permission and some principal match (Envoy's Policy).
func policyMatches(p *rbacv3.Policy, req rbacRequest) (bool, error) {
	perm := false
	for _, pm := range p.GetPermissions() {
		ok, err := permissionMatches(pm, req)
		if err != nil {
			return false, err
		}
		if ok {
			perm = true
			break
		}
	}
	if !perm {
		return false, nil
	}
	for _, id := range p.GetPrincipals() {
		ok, err := principalMatches(id, req)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

func permissionMatches(p *rbacv3.Permission, req rbacRequest) (bool, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any, nil
	case *rbacv3.Permission_AndRules:
		for _, sub := range r.AndRules.GetRules() {
			ok, err := permissionMatches(sub, req)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case *rbacv3.Permission_OrRules:
		for _, sub := range r.OrRules.GetRules() {
			ok, err := permissionMatches(sub, req)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case *rbacv3.Permission_NotRule:
		ok, err := permissionMatches(r.NotRule, req)
		return !ok, err
	case *rbacv3.Permission_DestinationPort:
		return int(r.DestinationPort) == req.port, nil
	case *rbacv3.Permission_DestinationPortRange:
		return int32(req.port) >= r.DestinationPortRange.GetStart() && int32(req.port) < r.DestinationPortRange.GetEnd(), nil
	case *rbacv3.Permission_Header:
		return headerMatches(r.Header, req)
	case *rbacv3.Permission_UrlPath:
		sm := r.UrlPath.GetPath()
		if sm == nil {
			return false, fmt.Errorf("url_path matcher without a path: %v", r.UrlPath)
		}
		if req.method == "" {
			return false, nil // no HTTP request on the chain
		}
		return stringMatches(sm, req.path)
	}
	return false, fmt.Errorf("permission the evaluator does not know: %v", p)
}

func headerMatches(h *route.HeaderMatcher, req rbacRequest) (bool, error) {
	var value string
	present := false
	switch h.GetName() {
	case ":method":
		value, present = req.method, req.method != ""
	case ":path":
		value, present = req.path, req.method != ""
	default:
		present = false
	}
	var ok bool
	switch m := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_PresentMatch:
		ok = present == m.PresentMatch
	case *route.HeaderMatcher_StringMatch:
		if present {
			var err error
			if ok, err = stringMatches(m.StringMatch, value); err != nil {
				return false, err
			}
		}
	case *route.HeaderMatcher_ExactMatch: //nolint:staticcheck // read as Envoy does
		ok = present && value == m.ExactMatch
	default:
		return false, fmt.Errorf("header matcher the evaluator does not know: %v", h)
	}
	if h.GetInvertMatch() {
		return !ok, nil
	}
	return ok, nil
}

func principalMatches(id *rbacv3.Principal, req rbacRequest) (bool, error) {
	switch r := id.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return r.Any, nil
	case *rbacv3.Principal_AndIds:
		for _, sub := range r.AndIds.GetIds() {
			ok, err := principalMatches(sub, req)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case *rbacv3.Principal_OrIds:
		for _, sub := range r.OrIds.GetIds() {
			ok, err := principalMatches(sub, req)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case *rbacv3.Principal_NotId:
		ok, err := principalMatches(r.NotId, req)
		return !ok, err
	case *rbacv3.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			return req.principal != "", nil
		}
		return stringMatches(r.Authenticated.GetPrincipalName(), req.principal)
	case *rbacv3.Principal_FilterState:
		if r.FilterState.GetKey() != "io.istio.peer_principal" {
			return false, fmt.Errorf("filter state key %q the evaluator does not know", r.FilterState.GetKey())
		}
		sm := r.FilterState.GetStringMatch()
		if sm == nil {
			return false, fmt.Errorf("filter state matcher without a string match: %v", r.FilterState)
		}
		return stringMatches(sm, req.principal)
	}
	return false, fmt.Errorf("principal the evaluator does not know: %v", id)
}

// stringMatches is Envoy's StringMatcher; a safe_regex must match the
// whole value.
func stringMatches(m *matcher.StringMatcher, v string) (bool, error) {
	if m.GetIgnoreCase() {
		v = strings.ToLower(v)
	}
	lower := func(s string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		return v == lower(p.Exact), nil
	case *matcher.StringMatcher_Prefix:
		return strings.HasPrefix(v, lower(p.Prefix)), nil
	case *matcher.StringMatcher_Suffix:
		return strings.HasSuffix(v, lower(p.Suffix)), nil
	case *matcher.StringMatcher_Contains:
		return strings.Contains(v, lower(p.Contains)), nil
	case *matcher.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex())
		if err != nil {
			return false, err
		}
		return re.MatchString(v), nil
	}
	return false, fmt.Errorf("string matcher the evaluator does not know: %v", m)
}

// regexCache holds the compiled safe_regex matchers: the random-graph test
// evaluates the same few thousand times.
var regexCache sync.Map

func compileRegex(expr string) (*regexp.Regexp, error) {
	if re, ok := regexCache.Load(expr); ok {
		return re.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	regexCache.Store(expr, re)
	return re, nil
}
