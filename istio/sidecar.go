package istio

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// DefaultClusterDomain is the Kubernetes cluster DNS domain of service
// hostnames when RenderOptions names none.
const DefaultClusterDomain = "cluster.local"

// The cluster DNS every pod resolves names with: Kubernetes' kube-dns
// Service (CoreDNS keeps the name and the k8s-app label).
const (
	DNSNamespace = "kube-system"
	DNSService   = "kube-dns"
	DNSPort      = 53
)

// DNSSelector is the label set of the cluster DNS pods.
func DNSSelector() map[string]string { return map[string]string{"k8s-app": "kube-dns"} }

// istiod, as sidecars reach it at L3/L4: istio-agent (in the istio-proxy
// container) fetches config and certificates on port 15012. Only
// NetworkPolicy egress needs it: the agent's connection is not routed by
// Envoy's outbound config, so a Sidecar resource never scopes it.
const (
	IstiodNamespace = "istio-system"
	IstiodPort      = 15012
)

// IstiodSelector is the label set of istiod's pods.
func IstiodSelector() map[string]string { return map[string]string{"app": "istiod"} }

// SidecarNamePrefix starts the name of every generated Sidecar, followed by
// the service name.
const SidecarNamePrefix = "meshwaf-egress-"

// ServiceHost is the Sidecar egress host ("namespace/fqdn") of a
// Kubernetes Service.
func ServiceHost(namespace, name, clusterDomain string) string {
	return namespace + "/" + name + "." + namespace + ".svc." + clusterDomain
}

// EgressHosts is the egress.hosts list of a service's Sidecar, sorted and
// without duplicates: every destination the plan lets it call (its edges,
// and meshwaf's Service when it is inspected, since its sidecar's ext_authz
// filter needs that cluster), the cluster DNS, and extra. Ports are not
// listed: the hosts are imported on every port they declare (see the README,
// "Egress scoping").
func EgressHosts(e meshpolicy.Egress, clusterDomain string, extra []string) []string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	hosts := []string{ServiceHost(DNSNamespace, DNSService, clusterDomain)}
	for _, c := range e.Calls {
		hosts = append(hosts, ServiceHost(c.Dest.Namespace, c.Dest.Name, clusterDomain))
	}
	hosts = append(hosts, extra...)
	sort.Strings(hosts)
	return slices.Compact(hosts)
}

// sidecars renders one Sidecar per graph service, in its namespace,
// selecting its pods, whose single egress listener imports EgressHosts.
// Sorted by namespace, then name.
func sidecars(plan *meshpolicy.Plan, opts RenderOptions) []*networkingv1.Sidecar {
	var out []*networkingv1.Sidecar
	for _, e := range plan.Egress() {
		s := e.Source
		var dests []string
		for _, c := range e.Calls {
			dests = append(dests, c.Dest.ID+" ("+strings.Join(c.Why, ", ")+")")
		}
		reason := "egress of " + s.ID + ": "
		if len(dests) > 0 {
			reason += strings.Join(dests, ", ") + " and "
		}
		reason += "the cluster DNS"
		sc := &networkingv1.Sidecar{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "Sidecar"},
			ObjectMeta: planObjectMeta(SidecarNamePrefix+s.Name, s.Namespace, false, reason),
		}
		sc.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: cloneLabels(s.Labels)}
		sc.Spec.Egress = []*networkingv1alpha3.IstioEgressListener{{Hosts: EgressHosts(e, opts.ClusterDomain, opts.EgressHosts)}}
		out = append(out, sc)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// egressHeader says what the egress objects of a format are and what they
// do not do.
func egressHeader(plan *meshpolicy.Plan, opts RenderOptions) []string {
	domain := opts.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	dns := ServiceHost(DNSNamespace, DNSService, domain)
	if opts.Format == FormatNetworkPolicy {
		return []string{
			"Egress: default deny of egress in: " + strings.Join(plan.Namespaces, ", ") + "; each service may reach its graph destinations on their ports,",
			fmt.Sprintf("  the cluster DNS (%s pods %s) on %d/UDP and %d/TCP, and istiod (%s pods %s) on %d, where istio-agent gets config and certificates.",
				DNSNamespace, labelString(DNSSelector()), DNSPort, DNSPort, IstiodNamespace, labelString(IstiodSelector()), IstiodPort),
		}
	}
	lines := []string{
		"Egress: one Sidecar (networking.istio.io/v1) per service importing exactly its graph destinations (meshwaf's Service for",
		"  inspected ones) and " + dns + ".",
	}
	if len(opts.EgressHosts) > 0 {
		lines = append(lines, "  Extra hosts for every service: "+strings.Join(opts.EgressHosts, ", ")+".")
	}
	return append(lines,
		"  Under the default outboundTrafficPolicy ALLOW_ANY this trims each proxy's config but does not block: calls to",
		"  services not imported go out through the PassthroughCluster. Set meshConfig.outboundTrafficPolicy.mode REGISTRY_ONLY to refuse them.")
}

func labelString(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
