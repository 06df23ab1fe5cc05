package istio

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// NamespaceNameLabel is the label Kubernetes puts on every namespace with
// its name.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// DefaultDenyIngressName is the name of the per-namespace default-deny
// NetworkPolicy.
const DefaultDenyIngressName = "default-deny-ingress"

// networkPolicies renders a plan at L3/L4: per covered namespace a policy
// selecting every pod with no ingress rule (default deny of ingress), then
// per destination with grants a policy selecting its labels that admits
// each granting peer by namespace and pod labels on its ports. Methods and
// paths cannot be expressed and are dropped; the header says so.
func networkPolicies(plan *meshpolicy.Plan) []*networkingv1.NetworkPolicy {
	peers := map[string]meshpolicy.Peer{}
	for _, s := range plan.Sources {
		peers[s.ID] = s
	}
	var out []*networkingv1.NetworkPolicy
	for _, ns := range plan.Namespaces {
		out = append(out, &networkingv1.NetworkPolicy{
			TypeMeta: metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
			ObjectMeta: planObjectMeta(DefaultDenyIngressName, ns, false,
				"default deny: ServiceGraph "+plan.Graph.Name+" covers this namespace; only meshwaf's policies admit traffic"),
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		})
	}
	for _, d := range plan.Destinations {
		if !d.HasGrants() {
			continue
		}
		np := &networkingv1.NetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
			ObjectMeta: planObjectMeta(d.PolicyName, d.Namespace, false, d.Reason),
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: cloneLabels(d.Labels)},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress:     ingressRules(d, peers),
			},
		}
		out = append(out, np)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if (a.Name == DefaultDenyIngressName) != (b.Name == DefaultDenyIngressName) {
			return a.Name == DefaultDenyIngressName
		}
		return a.Name < b.Name
	})
	return out
}

// ingressRules gives one rule per set of peers, listing the ports that set
// may reach, ordered by first port.
func ingressRules(d meshpolicy.Destination, peers map[string]meshpolicy.Peer) []networkingv1.NetworkPolicyIngressRule {
	type group struct {
		ids   []string
		ports []int
	}
	var groups []*group
	for _, dp := range d.Ports {
		var ids []string
		for _, gr := range dp.Grants {
			for _, id := range gr.Sources {
				if p, ok := peers[id]; ok && p.Namespace != "" && !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
		if len(ids) == 0 {
			continue
		}
		sort.Strings(ids)
		i := slices.IndexFunc(groups, func(g *group) bool { return slices.Equal(g.ids, ids) })
		if i < 0 {
			groups = append(groups, &group{ids: ids})
			i = len(groups) - 1
		}
		groups[i].ports = append(groups[i].ports, dp.Port)
	}
	var out []networkingv1.NetworkPolicyIngressRule
	for _, g := range groups {
		var rule networkingv1.NetworkPolicyIngressRule
		for _, id := range g.ids {
			p := peers[id]
			peer := networkingv1.NetworkPolicyPeer{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{NamespaceNameLabel: p.Namespace}},
			}
			if len(p.Labels) > 0 {
				peer.PodSelector = &metav1.LabelSelector{MatchLabels: cloneLabels(p.Labels)}
			}
			rule.From = append(rule.From, peer)
		}
		for _, port := range g.ports {
			tcp := corev1.ProtocolTCP
			pv := intstr.FromInt32(int32(port))
			rule.Ports = append(rule.Ports, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &pv})
		}
		out = append(out, rule)
	}
	return out
}

// networkPolicyNotes says what NetworkPolicies cannot express for a plan.
func networkPolicyNotes(plan *meshpolicy.Plan) []string {
	var notes []string
	narrowed := false
	for _, d := range plan.Destinations {
		for _, dp := range d.Ports {
			for _, gr := range dp.Grants {
				narrowed = narrowed || gr.Narrowed()
			}
		}
	}
	if narrowed {
		notes = append(notes, "HTTP methods and paths of edges are not expressible in NetworkPolicies: those edges admit every request on their ports.")
	}
	for _, s := range plan.Sources {
		switch {
		case s.Kind == meshpolicy.KindService:
		case s.Namespace == "":
			notes = append(notes, fmt.Sprintf("the %s is given only by principal %s, which has no namespace: it is not admitted.", s.Kind, s.Principal))
		case len(s.Labels) == 0:
			notes = append(notes, fmt.Sprintf("the %s has no selector: every pod of namespace %s is admitted where it is.", s.Kind, s.Namespace))
		}
	}
	return notes
}
