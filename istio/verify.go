package istio

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// istioRootNamespace is Istio's default root namespace, whose policies
// apply to every namespace.
const istioRootNamespace = "istio-system"

// kubectlNamespace is where kubectl puts an object without
// metadata.namespace when no other namespace is chosen.
const kubectlNamespace = "default"

// EvalOptions tune Evaluate.
type EvalOptions struct {
	// RootNamespace defaults to istio-system.
	RootNamespace string
	// UnsetPolicyNamespace is where a policy without metadata.namespace
	// lands (kubectl's namespace when applying it); defaults to "default".
	// It is not the namespace of a graph service that names none
	// (meshpolicy.DefaultServiceNamespace), though both are "default".
	UnsetPolicyNamespace string
}

// Evaluate computes which sources of plan reach which destination ports
// under policies, with the semantics of Istio's sidecar authorization:
//
//   - A policy applies to a destination when it is in the destination's
//     namespace or the root namespace and its selector matches the
//     destination's labels (no selector: every workload of its scope).
//     Policies with targetRefs (gateways, waypoints), with the
//     istio.io/dry-run annotation, and with action AUDIT are not enforced and
//     only noted; CUSTOM policies delegate to an external authorizer and
//     neither allow nor deny a flow here.
//   - DENY before ALLOW: a matching DENY rule denies; if any ALLOW policy
//     applies, only a matching ALLOW rule admits (an ALLOW policy without
//     rules admits nothing); with no ALLOW policy everything not denied is
//     admitted.
//   - Sources are matched on principals, namespaces, service accounts and
//     trust domains (and their not* forms) with Istio's exact, "prefix*",
//     "*suffix" and "*" forms, assuming every source calls over Istio mTLS
//     and the mesh's trust domain is the graph's. As Istio does, a principal
//     "cluster.local/ns/<ns>/sa/<sa>" (in principals, notPrincipals and
//     `when` source.principal) names the mesh's trust domain, and a service
//     account without a namespace is in the policy's namespace.
//     Operations are matched on ports and notPorts.
//   - A flow is one (source, destination, port); it is allowed when some
//     request on it is. An ALLOW rule narrowed by methods or paths admits
//     the flow partially (Reachability.Partial), for the requests its
//     operations on the port match (Reachability.Narrowings; unknown where
//     hosts, path templates or a conditional match decide). On a TCP or TLS port,
//     ALLOW rules that need HTTP attributes never match and DENY rules
//     ignore those attributes, as Istio does.
//   - What verify cannot evaluate makes the flow conditional
//     (Reachability.Conditional): hosts, ipBlocks, remoteIpBlocks,
//     requestPrincipals, `when` keys other than source.principal,
//     source.namespace and destination.port, and on HTTP ports DENY rules
//     narrowed by methods or paths.
//
// notes lists every policy that was ignored or only partly understood.
func Evaluate(plan *meshpolicy.Plan, policies []Policy, opts EvalOptions) (*meshpolicy.Reachability, []string) {
	if opts.RootNamespace == "" {
		opts.RootNamespace = istioRootNamespace
	}
	if opts.UnsetPolicyNamespace == "" {
		opts.UnsetPolicyNamespace = kubectlNamespace
	}
	ev := newEvaluator(plan)
	var notes []string
	idx := map[string]*nsPolicies{}
	for _, p := range policies {
		cp, note := ev.compile(p, opts)
		if note != "" {
			notes = append(notes, note)
		}
		if cp == nil {
			continue
		}
		ns := cp.namespace
		if idx[ns] == nil {
			idx[ns] = &nsPolicies{byLabel: map[string][]*compiledPolicy{}}
		}
		idx[ns].add(cp)
	}
	reach := meshpolicy.NewReachability(plan)
	reach.Narrowings = make([][]meshpolicy.Narrowing, plan.NumDestPorts())
	n := len(plan.Sources)
	all := meshpolicy.NewBits(n)
	all.Fill(n)
	denyYes, denyMaybe := meshpolicy.NewBits(n), meshpolicy.NewBits(n)
	allowYes, allowMaybe, allowFull := meshpolicy.NewBits(n), meshpolicy.NewBits(n), meshpolicy.NewBits(n)
	var applicable []*compiledPolicy
	for i, d := range plan.Destinations {
		applicable = applicable[:0]
		for _, ns := range []string{d.Namespace, opts.RootNamespace} {
			if idx[ns] != nil {
				applicable = idx[ns].matching(d.Labels, applicable)
			}
			if d.Namespace == opts.RootNamespace {
				break
			}
		}
		hasAllow := false
		for _, cp := range applicable {
			hasAllow = hasAllow || cp.action == securityv1beta1.AuthorizationPolicy_ALLOW
		}
		for j, dp := range d.Ports {
			k := plan.DestPortIndex(i, j)
			http := isHTTPProtocol(dp.Protocol)
			denyYes.Clear()
			denyMaybe.Clear()
			allowYes.Clear()
			allowMaybe.Clear()
			allowFull.Clear()
			if !hasAllow {
				allowYes.Fill(n)
				allowFull.Fill(n)
			}
			for _, cp := range applicable {
				deny := cp.action == securityv1beta1.AuthorizationPolicy_DENY
				for _, r := range cp.rules {
					yesSet, maybeSet, narrowed := ev.ruleResult(r, dp.Port, http, deny)
					switch {
					case deny:
						orNil(denyYes, yesSet)
						orNil(denyMaybe, maybeSet)
					default:
						orNil(allowYes, yesSet)
						orNil(allowMaybe, maybeSet)
						if !narrowed {
							orNil(allowFull, yesSet)
						}
						if http {
							reach.Narrowings[k] = appendNarrowings(reach.Narrowings[k], r.rule, dp.Port, yesSet, maybeSet, narrowed)
						}
					}
				}
			}
			allowed := reach.Allowed[k]
			copy(allowed, allowYes)
			allowed.AndNot(denyYes)
			allowed.AndNot(denyMaybe)
			cond := reach.Conditional[k]
			copy(cond, allowYes)
			cond.Or(allowMaybe)
			cond.AndNot(denyYes)
			cond.AndNot(allowed)
			part := reach.Partial[k]
			copy(part, allowed)
			part.AndNot(allowFull)
		}
	}
	return reach, notes
}

// appendNarrowings records what an ALLOW rule admits on an HTTP port: for
// its yes sources, when narrowed, the requests of its operations that
// apply to the port; for its maybe sources, unknown requests. Path
// templates and operations with hosts make the requests unknown too.
func appendNarrowings(out []meshpolicy.Narrowing, r *securityv1beta1.Rule, port int, yesSet, maybeSet meshpolicy.Bits, narrowed bool) []meshpolicy.Narrowing {
	if maybeSet != nil {
		out = append(out, meshpolicy.Narrowing{Sources: maybeSet, Unknown: true})
	}
	if yesSet == nil || !narrowed {
		return out
	}
	nw := meshpolicy.Narrowing{Sources: yesSet}
	for _, t := range r.To {
		o := t.GetOperation()
		switch v, _ := operationMatch(o, port, true, false); v {
		case triMaybe:
			nw.Unknown = true
		case triYes:
			nw.Unknown = nw.Unknown || slices.ContainsFunc(o.Paths, isPathTemplate) || slices.ContainsFunc(o.NotPaths, isPathTemplate)
			nw.Requests = append(nw.Requests, meshpolicy.RequestMatch{Methods: o.Methods, NotMethods: o.NotMethods, Paths: o.Paths, NotPaths: o.NotPaths})
		}
	}
	return append(out, nw)
}

// isPathTemplate reports whether an Istio path uses the {*} or {**}
// template forms, which Istio matches as URI templates.
func isPathTemplate(p string) bool {
	return strings.Contains(p, "{*}") || strings.Contains(p, "{**}")
}

func orNil(dst, src meshpolicy.Bits) {
	if src != nil {
		dst.Or(src)
	}
}

func isHTTPProtocol(p string) bool {
	switch p {
	case "HTTP", "HTTP2", "GRPC":
		return true
	}
	return false
}

// nsPolicies indexes one namespace's policies by the first label of their
// selector, so a destination looks at only the policies that may select it.
type nsPolicies struct {
	all     []*compiledPolicy // triNo selector
	byLabel map[string][]*compiledPolicy
}

func (n *nsPolicies) add(cp *compiledPolicy) {
	if len(cp.selector) == 0 {
		n.all = append(n.all, cp)
		return
	}
	keys := make([]string, 0, len(cp.selector))
	for k := range cp.selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	key := keys[0] + "=" + cp.selector[keys[0]]
	n.byLabel[key] = append(n.byLabel[key], cp)
}

func (n *nsPolicies) matching(labels map[string]string, out []*compiledPolicy) []*compiledPolicy {
	out = append(out, n.all...)
	for k, v := range labels {
	next:
		for _, cp := range n.byLabel[k+"="+v] {
			for sk, sv := range cp.selector {
				if lv, ok := labels[sk]; !ok || lv != sv {
					continue next
				}
			}
			out = append(out, cp)
		}
	}
	return out
}

type compiledPolicy struct {
	origin    string
	namespace string
	action    securityv1beta1.AuthorizationPolicy_Action
	selector  map[string]string
	rules     []*compiledRule
}

type compiledRule struct {
	policy *compiledPolicy
	rule   *securityv1beta1.Rule
	// source-dependent part (from and source.* conditions), per variant:
	// [0] HTTP port, [1] TCP port; computed on first use.
	src   [2]*triBits
	ready [2]bool
}

// triBits is a three-valued set: yes, maybe (nil when empty).
type triBits struct{ yes, maybe meshpolicy.Bits }

type evaluator struct {
	plan        *meshpolicy.Plan
	n           int
	trustDomain string
}

func newEvaluator(plan *meshpolicy.Plan) *evaluator {
	ev := &evaluator{plan: plan, n: len(plan.Sources), trustDomain: meshpolicy.DefaultTrustDomain}
	if plan.Graph != nil && plan.Graph.TrustDomain != "" {
		ev.trustDomain = plan.Graph.TrustDomain
	}
	return ev
}

// meshRelative returns r with the names Istio reads relative to the mesh
// made absolute: the trust domain "cluster.local" of a five-part principal
// is the mesh's own (Istio's trust domain migration), and a service account
// without a namespace is in the policy's namespace ns. r itself is not
// changed; it is returned as is when nothing needs rewriting.
func (ev *evaluator) meshRelative(r *securityv1beta1.Rule, ns string) *securityv1beta1.Rule {
	principal := func(p string) string {
		parts := strings.Split(p, "/")
		if len(parts) == 5 && parts[0] == meshpolicy.DefaultTrustDomain {
			return ev.trustDomain + p[len(parts[0]):]
		}
		return p
	}
	serviceAccount := func(sa string) string {
		if !strings.Contains(sa, "/") {
			return ns + "/" + sa
		}
		return sa
	}
	rewrite := func(list []string, f func(string) string) ([]string, bool) {
		var out []string
		for i, v := range list {
			if w := f(v); w != v {
				if out == nil {
					out = append([]string(nil), list...)
				}
				out[i] = w
			}
		}
		if out == nil {
			return list, false
		}
		return out, true
	}
	var c *securityv1beta1.Rule
	clone := func() *securityv1beta1.Rule {
		if c == nil {
			c = proto.Clone(r).(*securityv1beta1.Rule)
		}
		return c
	}
	for i, f := range r.From {
		s := f.GetSource()
		if s == nil {
			continue
		}
		for _, fld := range []struct {
			get func(*securityv1beta1.Source) *[]string
			f   func(string) string
		}{
			{func(s *securityv1beta1.Source) *[]string { return &s.Principals }, principal},
			{func(s *securityv1beta1.Source) *[]string { return &s.NotPrincipals }, principal},
			{func(s *securityv1beta1.Source) *[]string { return &s.ServiceAccounts }, serviceAccount},
			{func(s *securityv1beta1.Source) *[]string { return &s.NotServiceAccounts }, serviceAccount},
		} {
			if out, changed := rewrite(*fld.get(s), fld.f); changed {
				*fld.get(clone().From[i].Source) = out
			}
		}
	}
	for i, cond := range r.When {
		if cond.GetKey() != "source.principal" {
			continue
		}
		if out, changed := rewrite(cond.Values, principal); changed {
			clone().When[i].Values = out
		}
		if out, changed := rewrite(cond.NotValues, principal); changed {
			clone().When[i].NotValues = out
		}
	}
	if c != nil {
		return c
	}
	return r
}

func (ev *evaluator) compile(p Policy, opts EvalOptions) (*compiledPolicy, string) {
	ap := p.Object
	ns := ap.Namespace
	if ns == "" {
		ns = opts.UnsetPolicyNamespace
	}
	name := ns + "/" + ap.Name
	spec := &ap.Spec
	switch {
	case ap.Annotations[DryRunAnnotation] == "true":
		return nil, fmt.Sprintf("%s: %s: dry-run (%s), not enforced: ignored", p.Origin, name, DryRunAnnotation)
	case len(spec.TargetRefs) > 0 || spec.TargetRef != nil: //nolint:staticcheck // TargetRef is deprecated but still read by Istio
		return nil, fmt.Sprintf("%s: %s: targetRefs attach it to gateways or waypoints, not sidecars: ignored", p.Origin, name)
	case spec.Action == securityv1beta1.AuthorizationPolicy_AUDIT:
		return nil, fmt.Sprintf("%s: %s: AUDIT only logs: ignored", p.Origin, name)
	case spec.Action == securityv1beta1.AuthorizationPolicy_CUSTOM:
		return nil, fmt.Sprintf("%s: %s: CUSTOM delegates to an external authorizer, which neither allows nor denies a flow here: ignored", p.Origin, name)
	}
	cp := &compiledPolicy{origin: p.Origin, namespace: ns, action: spec.Action}
	if spec.Selector != nil {
		cp.selector = spec.Selector.MatchLabels
	}
	var unsupported []string
	for _, r := range spec.Rules {
		cp.rules = append(cp.rules, &compiledRule{policy: cp, rule: ev.meshRelative(r, ns)})
		unsupported = append(unsupported, unsupportedFields(r)...)
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		unsupported = uniqSorted(unsupported)
		return cp, fmt.Sprintf("%s: %s: %s cannot be evaluated: flows they decide are conditional", p.Origin, name, strings.Join(unsupported, ", "))
	}
	return cp, ""
}

func uniqSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func unsupportedFields(r *securityv1beta1.Rule) []string {
	var out []string
	for _, f := range r.From {
		s := f.GetSource()
		if len(s.GetIpBlocks())+len(s.GetNotIpBlocks()) > 0 {
			out = append(out, "ipBlocks")
		}
		if len(s.GetRemoteIpBlocks())+len(s.GetNotRemoteIpBlocks()) > 0 {
			out = append(out, "remoteIpBlocks")
		}
		if len(s.GetRequestPrincipals())+len(s.GetNotRequestPrincipals()) > 0 {
			out = append(out, "requestPrincipals")
		}
	}
	for _, t := range r.To {
		if o := t.GetOperation(); len(o.GetHosts())+len(o.GetNotHosts()) > 0 {
			out = append(out, "hosts")
		}
	}
	for _, c := range r.When {
		switch c.GetKey() {
		case "source.principal", "source.namespace", "destination.port":
		default:
			out = append(out, "when "+c.GetKey())
		}
	}
	return out
}

// tri is a three-valued truth.
type tri int

const (
	triNo tri = iota
	triMaybe
	triYes
)

func triAnd(a, b tri) tri { return min(a, b) }

// ruleResult is the sources a rule matches on port, as yes and maybe sets
// (nil when empty), and whether a match admits only some HTTP requests.
func (ev *evaluator) ruleResult(r *compiledRule, port int, http, deny bool) (yesSet, maybeSet meshpolicy.Bits, narrowed bool) {
	scalar, narrowed := ev.portPart(r.rule, port, http, deny)
	if scalar == triNo {
		return nil, nil, false
	}
	v := 0
	if !http {
		v = 1
	}
	if !r.ready[v] {
		r.src[v] = ev.sourcePart(r.rule, http, deny)
		r.ready[v] = true
	}
	s := r.src[v]
	if scalar == triYes {
		return s.yes, s.maybe, narrowed
	}
	// scalar maybe: every possible match is only a maybe.
	m := meshpolicy.NewBits(ev.n)
	orNil(m, s.yes)
	orNil(m, s.maybe)
	return nil, m, narrowed
}

// portPart evaluates `to` and the port-dependent or unsupported `when`
// conditions for one destination port.
func (ev *evaluator) portPart(r *securityv1beta1.Rule, port int, http, deny bool) (tri, bool) {
	res, narrowed := triYes, false
	if len(r.To) > 0 {
		best, bestNarrowed := triNo, false
		for _, t := range r.To {
			v, nar := operationMatch(t.GetOperation(), port, http, deny)
			if v > best || (v == best && v != triNo && bestNarrowed && !nar) {
				best, bestNarrowed = v, nar
			}
		}
		res, narrowed = best, bestNarrowed
	}
	for _, c := range r.When {
		switch key := c.GetKey(); {
		case key == "source.principal" || key == "source.namespace":
		case key == "destination.port":
			res = triAnd(res, valuesMatch(c.GetValues(), c.GetNotValues(), strconv.Itoa(port)))
		case strings.HasPrefix(key, "request.") && !http:
			if !deny {
				return triNo, false // an ALLOW rule needing HTTP attributes is dropped on TCP
			}
		default:
			res = triAnd(res, triMaybe)
		}
	}
	return res, narrowed
}

func operationMatch(o *securityv1beta1.Operation, port int, http, deny bool) (tri, bool) {
	if o == nil {
		return triYes, false
	}
	p := strconv.Itoa(port)
	if len(o.Ports) > 0 && !slices.Contains(o.Ports, p) {
		return triNo, false
	}
	if slices.Contains(o.NotPorts, p) {
		return triNo, false
	}
	l7 := len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) > 0
	hosts := len(o.Hosts)+len(o.NotHosts) > 0
	if !http {
		if (l7 || hosts) && !deny {
			return triNo, false
		}
		return triYes, false
	}
	switch {
	case hosts:
		return triMaybe, l7
	case l7 && deny:
		return triMaybe, true
	case l7:
		return triYes, true
	}
	return triYes, false
}

// sourcePart evaluates `from` and the source.* conditions of a rule for
// every source of the plan.
func (ev *evaluator) sourcePart(r *securityv1beta1.Rule, http, deny bool) *triBits {
	n := ev.n
	res := &triBits{yes: meshpolicy.NewBits(n)}
	if len(r.From) == 0 {
		res.yes.Fill(n)
	} else {
		for _, f := range r.From {
			ev.fromEntry(f.GetSource(), http, deny, res)
		}
	}
	var srcConds []*securityv1beta1.Condition
	for _, c := range r.When {
		if k := c.GetKey(); k == "source.principal" || k == "source.namespace" {
			srcConds = append(srcConds, c)
		}
	}
	if len(srcConds) > 0 {
		filter := func(i int) tri {
			v := triYes
			s := ev.plan.Sources[i]
			for _, c := range srcConds {
				val := s.Principal
				if c.GetKey() == "source.namespace" {
					val = s.Namespace
				}
				v = triAnd(v, valuesMatch(c.GetValues(), c.GetNotValues(), val))
			}
			return v
		}
		next := &triBits{yes: meshpolicy.NewBits(n)}
		visit := func(i int, base tri) {
			switch triAnd(base, filter(i)) {
			case triYes:
				next.yes.Set(i)
			case triMaybe:
				if next.maybe == nil {
					next.maybe = meshpolicy.NewBits(n)
				}
				next.maybe.Set(i)
			}
		}
		res.yes.Each(func(i int) { visit(i, triYes) })
		if res.maybe != nil {
			res.maybe.Each(func(i int) { visit(i, triMaybe) })
		}
		res = next
	}
	if res.maybe != nil {
		res.maybe.AndNot(res.yes)
		if res.maybe.Empty() {
			res.maybe = nil
		}
	}
	if res.yes.Empty() {
		res.yes = nil
	}
	return res
}

// fromEntry adds the sources one `from.source` matches to acc.
func (ev *evaluator) fromEntry(s *securityv1beta1.Source, http, deny bool, acc *triBits) {
	if s == nil {
		acc.yes.Fill(ev.n)
		return
	}
	// unsupported attributes: maybe on HTTP ports; on TCP ports an ALLOW
	// rule with requestPrincipals never matches and a DENY rule ignores them.
	base := triYes
	if len(s.IpBlocks)+len(s.NotIpBlocks)+len(s.RemoteIpBlocks)+len(s.NotRemoteIpBlocks) > 0 {
		base = triMaybe
	}
	if len(s.RequestPrincipals)+len(s.NotRequestPrincipals) > 0 {
		switch {
		case http:
			base = triMaybe
		case !deny:
			return
		}
	}
	onlyExactPrincipals := len(s.Principals) > 0 && len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+
		len(s.ServiceAccounts)+len(s.NotServiceAccounts)+len(s.TrustDomains)+len(s.NotTrustDomains) == 0
	for _, p := range s.Principals {
		onlyExactPrincipals = onlyExactPrincipals && !strings.Contains(p, "*")
	}
	mark := func(i int) {
		if base == triYes {
			acc.yes.Set(i)
			return
		}
		if acc.maybe == nil {
			acc.maybe = meshpolicy.NewBits(ev.n)
		}
		acc.maybe.Set(i)
	}
	if onlyExactPrincipals {
		for _, p := range s.Principals {
			for _, i := range ev.plan.SourcesWithPrincipal(p) {
				mark(i)
			}
		}
		return
	}
	for i, peer := range ev.plan.Sources {
		if sourceMatches(s, peer) {
			mark(i)
		}
	}
}

func sourceMatches(s *securityv1beta1.Source, p meshpolicy.Peer) bool {
	td, ns, sa, ok := meshpolicy.ParsePrincipal(p.Principal)
	if !ok {
		ns, sa = p.Namespace, p.ServiceAccount
	}
	if len(s.Principals) > 0 && !anyMatch(s.Principals, p.Principal) {
		return false
	}
	if anyMatch(s.NotPrincipals, p.Principal) {
		return false
	}
	if len(s.Namespaces) > 0 && !anyMatch(s.Namespaces, ns) {
		return false
	}
	if anyMatch(s.NotNamespaces, ns) {
		return false
	}
	nsSA := ns + "/" + sa
	if len(s.ServiceAccounts) > 0 && !slices.Contains(s.ServiceAccounts, nsSA) {
		return false
	}
	if slices.Contains(s.NotServiceAccounts, nsSA) {
		return false
	}
	if len(s.TrustDomains) > 0 && !anyMatch(s.TrustDomains, td) {
		return false
	}
	return !anyMatch(s.NotTrustDomains, td)
}

// valuesMatch is a `when` condition on one value.
func valuesMatch(values, notValues []string, v string) tri {
	if len(values) > 0 && !anyMatch(values, v) {
		return triNo
	}
	if anyMatch(notValues, v) {
		return triNo
	}
	return triYes
}

func anyMatch(patterns []string, v string) bool {
	for _, p := range patterns {
		if matchString(p, v) {
			return true
		}
	}
	return false
}

// matchString is Istio's string match in authorization policies: "*"
// matches any non-empty value, "prefix*" and "*suffix" match by prefix and
// suffix, anything else exactly.
func matchString(pattern, v string) bool {
	switch {
	case pattern == "*":
		return v != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, pattern[:len(pattern)-1])
	}
	return pattern == v
}
