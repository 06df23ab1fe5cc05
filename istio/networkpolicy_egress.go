package istio

import (
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// DefaultDenyEgressName is the name of the per-namespace default-deny
// egress NetworkPolicy.
const DefaultDenyEgressName = "default-deny-egress"

// withEgress adds the caller's side to the ingress NetworkPolicies nps of
// plan: per covered namespace a default deny of egress, and per service
// egress rules on its policy (created when the service had none) that let
// it reach each graph destination on the planned ports, the cluster DNS on
// 53/UDP and 53/TCP, and istiod on 15012. Sorted as networkPolicies sorts,
// the two default denies first.
func withEgress(plan *meshpolicy.Plan, nps []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	byName := map[string]*networkingv1.NetworkPolicy{}
	for _, np := range nps {
		byName[np.Namespace+"/"+np.Name] = np
	}
	for _, ns := range plan.Namespaces {
		nps = append(nps, &networkingv1.NetworkPolicy{
			TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
			ObjectMeta: planObjectMeta(DefaultDenyEgressName, ns, false,
				"default deny of egress: ServiceGraph "+plan.Graph.Name+" covers this namespace; only meshwaf's policies let pods call out"),
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
		})
	}
	policyName := map[string]string{}
	for _, d := range plan.Destinations {
		policyName[d.ID] = d.PolicyName
	}
	for _, e := range plan.Egress() {
		s := e.Source
		np := byName[s.Namespace+"/"+policyName[s.ID]]
		if np == nil {
			np = &networkingv1.NetworkPolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
				ObjectMeta: planObjectMeta(policyName[s.ID], s.Namespace, false, ""),
				Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: cloneLabels(s.Labels)}},
			}
			nps = append(nps, np)
		}
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		np.Spec.Egress = egressRules(e)
	}
	rank := func(name string) int {
		switch name {
		case DefaultDenyIngressName:
			return 0
		case DefaultDenyEgressName:
			return 1
		}
		return 2
	}
	sort.SliceStable(nps, func(i, j int) bool {
		a, b := nps[i], nps[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if rank(a.Name) != rank(b.Name) {
			return rank(a.Name) < rank(b.Name)
		}
		return a.Name < b.Name
	})
	return nps
}

// egressRules gives one rule per set of ports, listing the destinations
// reached on exactly those ports (in destination order), then the DNS rule
// and the istiod rule.
func egressRules(e meshpolicy.Egress) []networkingv1.NetworkPolicyEgressRule {
	type group struct {
		ports []int
		dests []meshpolicy.Peer
	}
	var groups []*group
	for _, c := range e.Calls {
		var ports []int
		for _, dp := range c.Ports {
			ports = append(ports, dp.Port)
		}
		i := slices.IndexFunc(groups, func(g *group) bool { return slices.Equal(g.ports, ports) })
		if i < 0 {
			groups = append(groups, &group{ports: ports})
			i = len(groups) - 1
		}
		groups[i].dests = append(groups[i].dests, c.Dest)
	}
	var out []networkingv1.NetworkPolicyEgressRule
	for _, g := range groups {
		var rule networkingv1.NetworkPolicyEgressRule
		for _, d := range g.dests {
			rule.To = append(rule.To, podsPeer(d.Namespace, d.Labels))
		}
		for _, p := range g.ports {
			rule.Ports = append(rule.Ports, npPort(corev1.ProtocolTCP, p))
		}
		out = append(out, rule)
	}
	out = append(out,
		networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{podsPeer(DNSNamespace, DNSSelector())},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolUDP, DNSPort), npPort(corev1.ProtocolTCP, DNSPort)},
		},
		networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{podsPeer(IstiodNamespace, IstiodSelector())},
			Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, IstiodPort)},
		})
	return out
}

// podsPeer selects the pods with labels (every pod without labels) in
// namespace.
func podsPeer(namespace string, labels map[string]string) networkingv1.NetworkPolicyPeer {
	p := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceNameLabel: namespace}},
	}
	if len(labels) > 0 {
		p.PodSelector = &metav1.LabelSelector{MatchLabels: cloneLabels(labels)}
	}
	return p
}

func npPort(proto corev1.Protocol, port int) networkingv1.NetworkPolicyPort {
	pv := intstr.FromInt32(int32(port))
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &pv}
}
