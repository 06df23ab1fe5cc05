package istio

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// EgressCheckOptions tune the egress checks.
type EgressCheckOptions struct {
	// ClusterDomain of Service hostnames (default cluster.local).
	ClusterDomain string
	// EgressHosts are the extra hosts every Sidecar is expected to import
	// (RenderOptions.EgressHosts).
	EgressHosts []string
	// RootNamespace holds the mesh-wide default Sidecar (default
	// istio-system).
	RootNamespace string
}

// EgressReport is what an egress check found, every list sorted.
type EgressReport struct {
	// Missing are calls the graph plans that the objects do not allow,
	// as "source -> host" (Sidecars) or "source -> dest:port/proto"
	// (NetworkPolicies).
	Missing []string
	// Extra are calls the objects allow that the graph does not plan.
	Extra []string
	// Problems make the result inexact or undefined: no object for a
	// service, several selecting it, patterns verify cannot evaluate.
	Problems []string
}

// OK reports whether the objects allow exactly the planned calls.
func (r EgressReport) OK() bool { return len(r.Missing)+len(r.Extra)+len(r.Problems) == 0 }

func (r *EgressReport) sort() {
	sort.Strings(r.Missing)
	sort.Strings(r.Extra)
	sort.Strings(r.Problems)
}

// CheckSidecars checks that the Sidecar applying to each graph service
// imports exactly the hosts EgressHosts names for it. The Sidecar that
// applies is chosen as Istio does: one in the service's namespace whose
// workloadSelector matches its labels, else the namespace's one without a
// selector, else the root namespace's one without a selector; more than one
// candidate is undefined in Istio and a problem here. Hosts are matched with
// Istio's namespace/dnsName rules (".", "*", "~ns" exclusions, "*" and
// "*.suffix" names) over every host the plan knows; an imported pattern
// ("*" namespace or "*" in the name) is a problem because it may import
// services outside the graph, and an imported exact host outside the plan
// is extra. Ports of egress listeners are not evaluated.
func CheckSidecars(plan *meshpolicy.Plan, scs []Origin[*networkingv1.Sidecar], opts EgressCheckOptions) EgressReport {
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = DefaultClusterDomain
	}
	if opts.RootNamespace == "" {
		opts.RootNamespace = istioRootNamespace
	}
	known := []string{ServiceHost(DNSNamespace, DNSService, opts.ClusterDomain)}
	for _, d := range plan.Destinations {
		known = append(known, ServiceHost(d.Namespace, d.Name, opts.ClusterDomain))
	}
	known = append(known, opts.EgressHosts...)
	var r EgressReport
	for _, e := range plan.Egress() {
		s := e.Source
		sc, problem := applicableSidecar(s, scs, opts.RootNamespace)
		if problem != "" {
			r.Problems = append(r.Problems, problem)
			continue
		}
		var entries []string
		for _, l := range sc.Object.Spec.GetEgress() {
			entries = append(entries, l.GetHosts()...)
		}
		want := EgressHosts(e, opts.ClusterDomain, opts.EgressHosts)
		imported, problems := importedHosts(sc.Object.Namespace, entries, known)
		for _, p := range problems {
			r.Problems = append(r.Problems, fmt.Sprintf("%s (Sidecar %s/%s at %s): %s", s.ID, sc.Object.Namespace, sc.Object.Name, sc.Origin, p))
		}
		for _, h := range want {
			if !slices.Contains(imported, h) {
				r.Missing = append(r.Missing, s.ID+" -> "+h)
			}
		}
		for _, h := range imported {
			if !slices.Contains(want, h) {
				r.Extra = append(r.Extra, s.ID+" -> "+h)
			}
		}
	}
	r.sort()
	return r
}

// applicableSidecar is the Sidecar Istio applies to the pods of s.
func applicableSidecar(s meshpolicy.Peer, scs []Origin[*networkingv1.Sidecar], root string) (Origin[*networkingv1.Sidecar], string) {
	var selecting, nsDefault, rootDefault []Origin[*networkingv1.Sidecar]
	for _, sc := range scs {
		sel := sc.Object.Spec.GetWorkloadSelector().GetLabels()
		switch {
		case sc.Object.Namespace == s.Namespace && len(sel) > 0 && selects(sel, s.Labels):
			selecting = append(selecting, sc)
		case sc.Object.Namespace == s.Namespace && len(sel) == 0:
			nsDefault = append(nsDefault, sc)
		case sc.Object.Namespace == root && len(sel) == 0:
			rootDefault = append(rootDefault, sc)
		}
	}
	for _, c := range [][]Origin[*networkingv1.Sidecar]{selecting, nsDefault, rootDefault} {
		switch len(c) {
		case 0:
			continue
		case 1:
			return c[0], ""
		}
		var names []string
		for _, sc := range c {
			names = append(names, sc.Object.Namespace+"/"+sc.Object.Name)
		}
		return Origin[*networkingv1.Sidecar]{}, fmt.Sprintf("%s: Sidecars %s all apply, which Istio leaves undefined", s.ID, strings.Join(names, ", "))
	}
	return Origin[*networkingv1.Sidecar]{}, s.ID + ": no Sidecar applies: its proxy imports every service of the mesh"
}

// selects reports whether every label of selector is in labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// importedHosts evaluates a Sidecar's host entries (in namespace ns) over
// the known hosts: those imported, sorted, and the entries that make the
// result inexact.
func importedHosts(ns string, entries, known []string) ([]string, []string) {
	var problems []string
	type entry struct{ ns, name string }
	var incl, excl []entry
	for _, h := range entries {
		hns, name, ok := strings.Cut(h, "/")
		switch {
		case !ok || hns == "" || name == "":
			problems = append(problems, fmt.Sprintf("host %q is not namespace/dnsName", h))
		case hns == "~":
			problems = append(problems, fmt.Sprintf("host %q: the bare ~ namespace is not evaluated", h))
		case strings.HasPrefix(hns, "~"):
			excl = append(excl, entry{strings.TrimPrefix(hns, "~"), name})
		default:
			if hns == "." {
				hns = ns
			}
			if hns == "*" || strings.Contains(name, "*") {
				problems = append(problems, fmt.Sprintf("host %q is a pattern: it may import services outside the graph", h))
			}
			incl = append(incl, entry{hns, name})
		}
	}
	match := func(e entry, host string) bool {
		hns, name, _ := strings.Cut(host, "/")
		if e.ns != "*" && e.ns != hns {
			return false
		}
		switch {
		case e.name == "*":
			return true
		case strings.HasPrefix(e.name, "*."):
			return strings.HasSuffix(strings.ToLower(name), strings.ToLower(e.name[1:]))
		}
		return strings.EqualFold(e.name, name)
	}
	var out []string
	for _, h := range known {
		in := slices.ContainsFunc(incl, func(e entry) bool { return match(e, h) })
		excluded := slices.ContainsFunc(excl, func(e entry) bool { return match(e, h) })
		if in && !excluded {
			out = append(out, h)
		}
	}
	// An exact entry for a host the plan does not know is extra as it is.
	for _, e := range incl {
		if e.ns == "*" || strings.Contains(e.name, "*") {
			continue
		}
		h := e.ns + "/" + e.name
		if !slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, h) }) {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), problems
}

// egressTarget is one pod set the NetworkPolicy egress check knows, with
// the ports it listens on.
type egressTarget struct {
	id        string
	namespace string
	labels    map[string]string
	ports     []protoPort
}

type protoPort struct {
	proto corev1.Protocol
	port  int
}

func (p protoPort) String() string { return fmt.Sprintf("%d/%s", p.port, p.proto) }

// CheckNetworkPolicyEgress checks that the NetworkPolicies selecting each
// graph service's pods let it reach exactly its planned destinations on
// their planned ports, the cluster DNS on 53/UDP and 53/TCP and istiod on
// 15012, among every destination port of the plan plus those two. A service
// no egress policy selects may reach everything (a problem). Peers are
// matched on the namespace name label and pod labels; ipBlocks,
// matchExpressions and other namespace labels are not evaluated and are
// problems; a named port never matches.
func CheckNetworkPolicyEgress(plan *meshpolicy.Plan, nps []Origin[*k8snetworkingv1.NetworkPolicy]) EgressReport {
	dns := egressTarget{id: DNSNamespace + "/" + DNSService, namespace: DNSNamespace, labels: DNSSelector(),
		ports: []protoPort{{corev1.ProtocolUDP, DNSPort}, {corev1.ProtocolTCP, DNSPort}}}
	istiod := egressTarget{id: IstiodNamespace + "/istiod", namespace: IstiodNamespace, labels: IstiodSelector(),
		ports: []protoPort{{corev1.ProtocolTCP, IstiodPort}}}
	targets := []egressTarget{dns, istiod}
	for _, d := range plan.Destinations {
		t := egressTarget{id: d.ID, namespace: d.Namespace, labels: d.Labels}
		for _, dp := range d.Ports {
			t.ports = append(t.ports, protoPort{corev1.ProtocolTCP, dp.Port})
		}
		targets = append(targets, t)
	}
	var r EgressReport
	for _, e := range plan.Egress() {
		s := e.Source
		want := map[string]bool{}
		for _, c := range e.Calls {
			for _, dp := range c.Ports {
				want[c.Dest.ID+":"+protoPort{corev1.ProtocolTCP, dp.Port}.String()] = true
			}
		}
		for _, t := range []egressTarget{dns, istiod} {
			for _, p := range t.ports {
				want[t.id+":"+p.String()] = true
			}
		}
		var rules []k8snetworkingv1.NetworkPolicyEgressRule
		restricted := false
		for _, np := range nps {
			if np.Object.Namespace != s.Namespace || !hasEgressType(np.Object.Spec) {
				continue
			}
			ps := np.Object.Spec.PodSelector
			if len(ps.MatchExpressions) > 0 {
				r.Problems = append(r.Problems, fmt.Sprintf("%s: NetworkPolicy %s/%s at %s: podSelector matchExpressions are not evaluated", s.ID, np.Object.Namespace, np.Object.Name, np.Origin))
				continue
			}
			if !selects(ps.MatchLabels, s.Labels) {
				continue
			}
			restricted = true
			rules = append(rules, np.Object.Spec.Egress...)
		}
		if !restricted {
			r.Problems = append(r.Problems, s.ID+": no NetworkPolicy restricts its egress: it may reach everything")
			continue
		}
		got := map[string]bool{}
		for _, rule := range rules {
			for _, t := range targets {
				if !ruleReaches(rule, s.Namespace, t, func(p string) { r.Problems = append(r.Problems, s.ID+": "+p) }) {
					continue
				}
				for _, p := range t.ports {
					if portsAllow(rule.Ports, p) {
						got[t.id+":"+p.String()] = true
					}
				}
			}
		}
		for f := range want {
			if !got[f] {
				r.Missing = append(r.Missing, s.ID+" -> "+f)
			}
		}
		for f := range got {
			if !want[f] {
				r.Extra = append(r.Extra, s.ID+" -> "+f)
			}
		}
	}
	r.sort()
	r.Problems = slices.Compact(r.Problems)
	return r
}

// hasEgressType reports whether a policy restricts egress: policyTypes
// lists Egress, or, without policyTypes, it has egress rules.
func hasEgressType(spec k8snetworkingv1.NetworkPolicySpec) bool {
	if len(spec.PolicyTypes) == 0 {
		return len(spec.Egress) > 0
	}
	return slices.Contains(spec.PolicyTypes, k8snetworkingv1.PolicyTypeEgress)
}

// ruleReaches reports whether an egress rule of a policy in namespace ns
// has a peer selecting t; what it cannot evaluate goes to problem.
func ruleReaches(rule k8snetworkingv1.NetworkPolicyEgressRule, ns string, t egressTarget, problem func(string)) bool {
	if len(rule.To) == 0 {
		return true
	}
	for _, peer := range rule.To {
		if peer.IPBlock != nil {
			problem(fmt.Sprintf("ipBlock %s is not evaluated", peer.IPBlock.CIDR))
			continue
		}
		nsOK := t.namespace == ns
		if sel := peer.NamespaceSelector; sel != nil {
			nsOK = true
			if len(sel.MatchExpressions) > 0 {
				problem("namespaceSelector matchExpressions are not evaluated")
				continue
			}
			for k, v := range sel.MatchLabels {
				if k != NamespaceNameLabel {
					problem(fmt.Sprintf("namespace label %s is not evaluated", k))
					nsOK = false
				} else if v != t.namespace {
					nsOK = false
				}
			}
		}
		if !nsOK {
			continue
		}
		if sel := peer.PodSelector; sel != nil {
			if len(sel.MatchExpressions) > 0 {
				problem("podSelector matchExpressions are not evaluated")
				continue
			}
			if !selects(sel.MatchLabels, t.labels) {
				continue
			}
		}
		return true
	}
	return false
}

// portsAllow reports whether a rule's ports admit p (no ports: every port).
func portsAllow(ports []k8snetworkingv1.NetworkPolicyPort, p protoPort) bool {
	if len(ports) == 0 {
		return true
	}
	for _, np := range ports {
		proto := corev1.ProtocolTCP
		if np.Protocol != nil {
			proto = *np.Protocol
		}
		if proto != p.proto {
			continue
		}
		if np.Port == nil {
			return true
		}
		if np.Port.Type != 0 { // named port: not evaluated, never matches
			continue
		}
		lo, hi := int(np.Port.IntVal), int(np.Port.IntVal)
		if np.EndPort != nil {
			hi = int(*np.EndPort)
		}
		if p.port >= lo && p.port <= hi {
			return true
		}
	}
	return false
}
