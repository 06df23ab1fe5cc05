package istio

import (
	"testing"

	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestSidecars(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["full"])
	got := map[string][]string{}
	for _, sc := range sidecars(plan, RenderOptions{ClusterDomain: "corp.example", EgressHosts: []string{"obs/otel.obs.svc.corp.example"}}) {
		require.Len(t, sc.Spec.Egress, 1, sc.Name)
		require.Zero(t, sc.Spec.Egress[0].Port, "hosts only: imported on every port they declare")
		got[sc.Namespace+"/"+sc.Name+" "+labelString(sc.Spec.WorkloadSelector.Labels)] = sc.Spec.Egress[0].Hosts
	}
	dns, otel := "kube-system/kube-dns.kube-system.svc.corp.example", "obs/otel.obs.svc.corp.example"
	require.Equal(t, map[string][]string{
		"back/meshwaf-egress-api app=api,tier=backend": {"back/db.back.svc.corp.example", dns, otel, "waf/meshwaf.waf.svc.corp.example"},
		"back/meshwaf-egress-batch app=batch":          {"back/db.back.svc.corp.example", dns, otel},
		"back/meshwaf-egress-db app=db":                {dns, otel},
		"front/meshwaf-egress-web app=web":             {"back/api.back.svc.corp.example", dns, otel, "waf/meshwaf.waf.svc.corp.example"},
	}, got)
}

func TestGenerateEgressOptions(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["shop"])
	_, err := Generate(plan, RenderOptions{Format: FormatIstio, DryRun: true, Egress: true})
	require.ErrorContains(t, err, "Sidecars have no dry-run mode")
	// Off, the ingress-only outputs stay as they were (their goldens), and
	// no Sidecar or egress rule appears.
	objs, err := renderPolicies(plan, RenderOptions{Format: FormatNetworkPolicy})
	require.NoError(t, err)
	for _, o := range objs {
		np := o.(*networkingv1.NetworkPolicy)
		require.Empty(t, np.Spec.Egress, np.Name)
		require.NotContains(t, np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress, np.Name)
	}
}

func TestNetworkPolicyEgress(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["full"])
	byName := map[string]*networkingv1.NetworkPolicy{}
	for _, np := range withEgress(plan, networkPolicies(plan)) {
		byName[np.Namespace+"/"+np.Name] = np
	}
	for _, ns := range []string{"back", "front"} {
		deny := byName[ns+"/"+DefaultDenyEgressName]
		require.NotNil(t, deny, ns)
		require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, deny.Spec.PolicyTypes)
		require.Empty(t, deny.Spec.Egress)
	}
	// batch has no callers, so no ingress policy: its egress policy is new
	// and only about egress.
	batch := byName["back/meshwaf-allow-batch"]
	require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, batch.Spec.PolicyTypes)
	require.Empty(t, batch.Spec.Ingress)
	require.Len(t, batch.Spec.Egress, 3, "db, DNS, istiod")
	require.Equal(t, map[string]string{"app": "db"}, batch.Spec.Egress[0].To[0].PodSelector.MatchLabels)
	require.Equal(t, int32(5432), batch.Spec.Egress[0].Ports[0].Port.IntVal)
	dnsRule := batch.Spec.Egress[1]
	require.Equal(t, "UDP", string(*dnsRule.Ports[0].Protocol))
	require.Equal(t, "TCP", string(*dnsRule.Ports[1].Protocol))
	require.Equal(t, int32(DNSPort), dnsRule.Ports[0].Port.IntVal)
	require.Equal(t, int32(IstiodPort), batch.Spec.Egress[2].Ports[0].Port.IntVal)
	// api keeps its ingress rules and adds egress.
	api := byName["back/meshwaf-allow-api"]
	require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, api.Spec.PolicyTypes)
	require.NotEmpty(t, api.Spec.Ingress)
	// meshwaf's own policy is not a service's: no egress added to it.
	require.Empty(t, byName["waf/meshwaf-ext-authz-callers"].Spec.Egress)
}
