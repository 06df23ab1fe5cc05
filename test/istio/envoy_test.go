package istiotest

import (
	"fmt"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	meshconfig "istio.io/api/mesh/v1alpha1"
)

type meshConfig = meshconfig.MeshConfig

// Envoy filter names, as Istio writes them.
const (
	httpRBAC     = "envoy.filters.http.rbac"
	networkRBAC  = "envoy.filters.network.rbac"
	httpExtAuthz = "envoy.filters.http.ext_authz"
	httpRouter   = "envoy.filters.http.router"
	hcmName      = "envoy.filters.network.http_connection_manager"
	inboundName  = "virtualInbound"
)

// inboundChains returns the filter chains of the sidecar's inbound
// listener.
func inboundChains(t *testing.T, ls []*listenerT) []*listener.FilterChain {
	t.Helper()
	for _, l := range ls {
		if l.GetName() == inboundName {
			return l.GetFilterChains()
		}
	}
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		names = append(names, l.GetName())
	}
	t.Fatalf("no %s listener among %v", inboundName, names)
	return nil
}

func chainName(fc *listener.FilterChain) string {
	port := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
	tp := fc.GetFilterChainMatch().GetTransportProtocol()
	return fmt.Sprintf("%s(port %d, %s)", fc.GetName(), port, tp)
}

func unmarshal(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("decoding %s: %v", a.GetTypeUrl(), err)
	}
}

// httpFilters returns the HTTP filters of a chain, nil when the chain has
// no HTTP connection manager.
func httpFilters(t *testing.T, fc *listener.FilterChain) []*hcm.HttpFilter {
	t.Helper()
	for _, f := range fc.GetFilters() {
		if f.GetName() != hcmName {
			continue
		}
		m := &hcm.HttpConnectionManager{}
		unmarshal(t, f.GetTypedConfig(), m)
		return m.GetHttpFilters()
	}
	return nil
}

// rbacFilters are the RBAC configurations of one chain: the HTTP ones when
// it serves HTTP, the network ones otherwise.
type rbacFilters struct {
	rules  []*rbacv3.RBAC // enforced
	shadow []*rbacv3.RBAC // evaluated only (dry-run, CUSTOM matching)
}

func chainRBAC(t *testing.T, fc *listener.FilterChain) rbacFilters {
	t.Helper()
	var r rbacFilters
	add := func(rules, shadow *rbacv3.RBAC) {
		if rules != nil {
			r.rules = append(r.rules, rules)
		}
		if shadow != nil {
			r.shadow = append(r.shadow, shadow)
		}
	}
	for _, hf := range httpFilters(t, fc) {
		if hf.GetName() == httpRBAC {
			m := &httprbac.RBAC{}
			unmarshal(t, hf.GetTypedConfig(), m)
			add(m.GetRules(), m.GetShadowRules())
		}
	}
	for _, f := range fc.GetFilters() {
		if f.GetName() == networkRBAC {
			m := &netrbac.RBAC{}
			unmarshal(t, f.GetTypedConfig(), m)
			add(m.GetRules(), m.GetShadowRules())
		}
	}
	return r
}

// flows flattens RBAC policies into "principal -> port" strings. It
// understands the shapes Istio generates for principals and ports (and/or
// trees of authenticated or peer-principal filter-state matchers and
// destination ports); anything else is returned in unknown, so a policy
// the test cannot read fails it instead of being skipped.
func flows(rbacs []*rbacv3.RBAC, action rbacv3.RBAC_Action) (map[string]bool, []string) {
	out := map[string]bool{}
	var unknown []string
	for _, r := range rbacs {
		if r.GetAction() != action {
			continue
		}
		for _, name := range sortedKeys(r.GetPolicies()) {
			p := r.GetPolicies()[name]
			var ports []string
			for _, perm := range p.GetPermissions() {
				ports = append(ports, permissionPorts(perm, &unknown, name)...)
			}
			var principals []string
			for _, id := range p.GetPrincipals() {
				principals = append(principals, principalNames(id, &unknown, name)...)
			}
			for _, pr := range principals {
				for _, po := range ports {
					out[pr+" -> "+po] = true
				}
			}
		}
	}
	return out, unknown
}

func permissionPorts(p *rbacv3.Permission, unknown *[]string, policy string) []string {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_DestinationPort:
		return []string{fmt.Sprint(r.DestinationPort)}
	case *rbacv3.Permission_AndRules:
		// Istio ANDs one OR-group per field of the rule; ports are the
		// only field meshwaf uses, so the AND has one port group.
		var ports []string
		groups := 0
		for _, sub := range r.AndRules.GetRules() {
			if got := permissionPorts(sub, unknown, policy); got != nil {
				ports = append(ports, got...)
				groups++
			}
		}
		if groups > 1 {
			*unknown = append(*unknown, fmt.Sprintf("%s: more than one port group in an AND: %v", policy, p))
		}
		return ports
	case *rbacv3.Permission_OrRules:
		var ports []string
		for _, sub := range r.OrRules.GetRules() {
			ports = append(ports, permissionPorts(sub, unknown, policy)...)
		}
		return ports
	case *rbacv3.Permission_Any:
		return []string{"any"}
	case *rbacv3.Permission_NotRule:
		// Istio's rule for an ALLOW policy without rules (allow-nothing):
		// it matches no request.
		if r.NotRule.GetAny() {
			return []string{}
		}
		*unknown = append(*unknown, fmt.Sprintf("%s: permission %v", policy, p))
		return nil
	default:
		*unknown = append(*unknown, fmt.Sprintf("%s: permission %v", policy, p))
		return nil
	}
}

func principalNames(id *rbacv3.Principal, unknown *[]string, policy string) []string {
	switch r := id.GetIdentifier().(type) {
	case *rbacv3.Principal_Authenticated_:
		return []string{stringMatch(r.Authenticated.GetPrincipalName())}
	case *rbacv3.Principal_FilterState:
		if r.FilterState.GetKey() == "io.istio.peer_principal" {
			return []string{stringMatch(r.FilterState.GetStringMatch())}
		}
	case *rbacv3.Principal_AndIds:
		var names []string
		groups := 0
		for _, sub := range r.AndIds.GetIds() {
			if got := principalNames(sub, unknown, policy); got != nil {
				names = append(names, got...)
				groups++
			}
		}
		if groups > 1 {
			*unknown = append(*unknown, fmt.Sprintf("%s: more than one principal group in an AND: %v", policy, id))
		}
		return names
	case *rbacv3.Principal_OrIds:
		var names []string
		for _, sub := range r.OrIds.GetIds() {
			names = append(names, principalNames(sub, unknown, policy)...)
		}
		return names
	case *rbacv3.Principal_Any:
		return []string{"any"}
	case *rbacv3.Principal_NotId:
		if r.NotId.GetAny() {
			return []string{} // allow-nothing: matches no caller
		}
	}
	*unknown = append(*unknown, fmt.Sprintf("%s: principal %v", policy, id))
	return nil
}

func stringMatch(m *matcher.StringMatcher) string {
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		return p.Exact
	case *matcher.StringMatcher_Prefix:
		return p.Prefix + "*"
	case *matcher.StringMatcher_Suffix:
		return "*" + p.Suffix
	default:
		return "match(" + strings.TrimSpace(m.String()) + ")"
	}
}

type listenerT = listener.Listener

// isBlackhole tells the chain that drops traffic sent to the inbound port
// itself: it carries no application traffic and so no RBAC.
func isBlackhole(fc *listener.FilterChain) bool {
	return fc.GetName() == "virtualInbound-blackhole"
}
