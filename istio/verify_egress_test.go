package istio

import (
	"testing"

	"github.com/stretchr/testify/require"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// generatedEgress renders the graph with --egress in format and reads the
// egress objects back through the loader verify uses.
func generatedEgress(t *testing.T, graph, format string) *EgressObjects {
	t.Helper()
	out, err := Generate(loadPlan(t, goldenGraphs[graph]), RenderOptions{Format: format, Egress: true})
	require.NoError(t, err)
	objs := &EgressObjects{}
	require.NoError(t, objs.add("gen.yaml", out))
	return objs
}

func TestCheckSidecars(t *testing.T) {
	const www = "default/meshwaf-egress-www"
	tests := []struct {
		name   string
		mutate func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar]
		want   EgressReport
	}{
		{"generated: exact", nil, EgressReport{}},
		{"a destination dropped", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			h := &byName(scs, www).Spec.Egress[0].Hosts
			*h = (*h)[1:] // default/auth...
			return scs
		}, EgressReport{Missing: []string{"default/www -> default/auth.default.svc.cluster.local"}}},
		{"an extra service and an unknown host, in another listener", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			sc := byName(scs, "default/meshwaf-egress-auth")
			sc.Spec.Egress = append(sc.Spec.Egress, &networkingv1alpha3.IstioEgressListener{Hosts: []string{"./db.default.svc.cluster.local", "other/x.other.svc.cluster.local"}})
			return scs
		}, EgressReport{Extra: []string{"default/auth -> default/db.default.svc.cluster.local", "default/auth -> other/x.other.svc.cluster.local"}}},
		{"a namespace pattern minus an exclusion", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			byName(scs, www).Spec.Egress[0].Hosts = []string{"default/*", "~default/www.default.svc.cluster.local", "kube-system/kube-dns.kube-system.svc.cluster.local", "meshwaf-system/meshwaf.meshwaf-system.svc.cluster.local"}
			return scs
		}, EgressReport{Problems: []string{`default/www (Sidecar default/meshwaf-egress-www at gen.yaml:151): host "default/*" is a pattern: it may import services outside the graph`}}},
		{"no Sidecar for db, none by default", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			return drop(scs, "default/meshwaf-egress-db")
		}, EgressReport{Problems: []string{"default/db: no Sidecar applies: its proxy imports every service of the mesh"}}},
		{"the root namespace default applies", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			root := &networkingv1.Sidecar{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "istio-system"}}
			root.Spec.Egress = []*networkingv1alpha3.IstioEgressListener{{Hosts: []string{"kube-system/kube-dns.kube-system.svc.cluster.local"}}}
			return append(drop(scs, "default/meshwaf-egress-db"), Origin[*networkingv1.Sidecar]{"root.yaml:1", root})
		}, EgressReport{Missing: []string{"default/db -> meshwaf-system/meshwaf.meshwaf-system.svc.cluster.local"}}},
		{"two Sidecars select www", func(scs []Origin[*networkingv1.Sidecar]) []Origin[*networkingv1.Sidecar] {
			dup := byName(scs, www).DeepCopy()
			dup.Name = "hand-written"
			return append(scs, Origin[*networkingv1.Sidecar]{"hand.yaml:1", dup})
		}, EgressReport{Problems: []string{"default/www: Sidecars default/meshwaf-egress-www, default/hand-written all apply, which Istio leaves undefined"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scs := generatedEgress(t, "shop", FormatIstio).Sidecars
			require.Len(t, scs, 3)
			if tt.mutate != nil {
				scs = tt.mutate(scs)
			}
			got := CheckSidecars(loadPlan(t, goldenGraphs["shop"]), scs, EgressCheckOptions{})
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.want.OK(), got.OK())
		})
	}
}

func TestCheckSidecarsExtraHostsAndDomain(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["full"])
	out, err := Generate(plan, RenderOptions{Egress: true, ClusterDomain: "corp.example", EgressHosts: []string{"obs/otel.obs.svc.corp.example"}})
	require.NoError(t, err)
	objs := &EgressObjects{}
	require.NoError(t, objs.add("gen.yaml", out))
	require.True(t, CheckSidecars(plan, objs.Sidecars, EgressCheckOptions{ClusterDomain: "corp.example", EgressHosts: []string{"obs/otel.obs.svc.corp.example"}}).OK())
	// Checked without the extra host, it is extra everywhere.
	r := CheckSidecars(plan, objs.Sidecars, EgressCheckOptions{ClusterDomain: "corp.example"})
	require.Len(t, r.Extra, 4)
	require.Contains(t, r.Extra, "back/db -> obs/otel.obs.svc.corp.example")
}

func TestCheckNetworkPolicyEgress(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(nps []Origin[*k8snetworkingv1.NetworkPolicy])
		want   EgressReport
	}{
		{"generated: exact", nil, EgressReport{}},
		{"DNS over TCP dropped", func(nps []Origin[*k8snetworkingv1.NetworkPolicy]) {
			rule := &npByName(nps, "back/meshwaf-allow-batch").Spec.Egress[1]
			rule.Ports = rule.Ports[:1]
		}, EgressReport{Missing: []string{"back/batch -> kube-system/kube-dns:53/TCP"}}},
		{"a rule to every port of db's namespace", func(nps []Origin[*k8snetworkingv1.NetworkPolicy]) {
			np := npByName(nps, "back/meshwaf-allow-batch")
			np.Spec.Egress = append(np.Spec.Egress, k8snetworkingv1.NetworkPolicyEgressRule{To: []k8snetworkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}})
		}, EgressReport{Extra: []string{"back/batch -> back/api:5000/TCP", "back/batch -> back/api:8443/TCP"}}},
		{"egress policy of db removed", func(nps []Origin[*k8snetworkingv1.NetworkPolicy]) {
			np := npByName(nps, "back/meshwaf-allow-db")
			np.Spec.PolicyTypes = np.Spec.PolicyTypes[:1]
			np.Spec.Egress = nil
			for i := range nps {
				if nps[i].Object.Name == DefaultDenyEgressName {
					nps[i].Object.Spec.PolicyTypes = nil
				}
			}
		}, EgressReport{Problems: []string{"back/db: no NetworkPolicy restricts its egress: it may reach everything"}}},
		{"an ipBlock", func(nps []Origin[*k8snetworkingv1.NetworkPolicy]) {
			np := npByName(nps, "front/meshwaf-allow-web")
			np.Spec.Egress[0].To = append(np.Spec.Egress[0].To, k8snetworkingv1.NetworkPolicyPeer{IPBlock: &k8snetworkingv1.IPBlock{CIDR: "10.0.0.0/8"}})
		}, EgressReport{Problems: []string{"front/web: ipBlock 10.0.0.0/8 is not evaluated"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nps := generatedEgress(t, "full", FormatNetworkPolicy).NetworkPolicies
			if tt.mutate != nil {
				tt.mutate(nps)
			}
			got := CheckNetworkPolicyEgress(loadPlan(t, goldenGraphs["full"]), nps)
			require.Equal(t, tt.want, got)
		})
	}
}

func byName(scs []Origin[*networkingv1.Sidecar], id string) *networkingv1.Sidecar {
	for _, sc := range scs {
		if sc.Object.Namespace+"/"+sc.Object.Name == id {
			return sc.Object
		}
	}
	panic(id)
}

func drop(scs []Origin[*networkingv1.Sidecar], id string) []Origin[*networkingv1.Sidecar] {
	var out []Origin[*networkingv1.Sidecar]
	for _, sc := range scs {
		if sc.Object.Namespace+"/"+sc.Object.Name != id {
			out = append(out, sc)
		}
	}
	return out
}

func npByName(nps []Origin[*k8snetworkingv1.NetworkPolicy], id string) *k8snetworkingv1.NetworkPolicy {
	for _, np := range nps {
		if np.Object.Namespace+"/"+np.Object.Name == id {
			return np.Object
		}
	}
	panic(id)
}
