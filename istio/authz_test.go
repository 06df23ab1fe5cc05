package istio

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/meshwaf/meshwaf/internal/golden"
	"github.com/meshwaf/meshwaf/internal/kubeyaml"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

func loadPlan(t *testing.T, path string) *meshpolicy.Plan {
	t.Helper()
	g, err := meshpolicy.Load(path)
	require.NoError(t, err)
	return meshpolicy.NewPlan(g)
}

var goldenGraphs = map[string]string{
	"shop": filepath.Join("..", "examples", "shop-graph.yaml"),
	"full": filepath.Join("testdata", "graphs", "full.yaml"),
}

func TestGenerateGolden(t *testing.T) {
	variants := []struct {
		name string
		opts RenderOptions
	}{
		{"istio", RenderOptions{Format: FormatIstio}},
		{"istio-dry-run", RenderOptions{Format: FormatIstio, DryRun: true}},
		{"networkpolicy", RenderOptions{Format: FormatNetworkPolicy}},
		{"istio-egress", RenderOptions{Format: FormatIstio, Egress: true}},
		{"networkpolicy-egress", RenderOptions{Format: FormatNetworkPolicy, Egress: true}},
	}
	for graph, path := range goldenGraphs {
		for _, v := range variants {
			t.Run(graph+"/"+v.name, func(t *testing.T) {
				out, err := Generate(loadPlan(t, path), v.opts)
				require.NoError(t, err)
				again, err := Generate(loadPlan(t, path), v.opts)
				require.NoError(t, err)
				require.Equal(t, string(out), string(again), "deterministic")
				golden.Check(t, filepath.Join("testdata", "golden", graph+"."+v.name+".yaml"), out)
			})
		}
	}
}

func TestAuthorizationPoliciesShop(t *testing.T) {
	aps := authorizationPolicies(loadPlan(t, goldenGraphs["shop"]), false)
	var names []string
	for _, ap := range aps {
		names = append(names, ap.Namespace+"/"+ap.Name)
		require.Equal(t, kubeyaml.ManagedBy, ap.Labels[kubeyaml.ManagedByLabel])
		require.Empty(t, ap.Annotations[DryRunAnnotation])
	}
	require.Equal(t, []string{"default/allow-nothing", "default/meshwaf-allow-auth", "default/meshwaf-allow-db", "default/meshwaf-allow-www",
		"meshwaf-system/meshwaf-ext-authz-callers"}, names)
	deny := aps[0]
	require.Nil(t, deny.Spec.Selector)
	require.Empty(t, deny.Spec.Rules, "allow-nothing: ALLOW with no rules")
	auth := aps[1]
	require.Equal(t, map[string]string{"app": "auth"}, auth.Spec.Selector.MatchLabels)
	require.Len(t, auth.Spec.Rules, 1)
	require.Equal(t, []string{"cluster.local/ns/default/sa/www"}, auth.Spec.Rules[0].From[0].Source.Principals)
	require.Equal(t, []string{"8080"}, auth.Spec.Rules[0].To[0].Operation.Ports)
	www := aps[3]
	require.Equal(t, []string{"cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}, www.Spec.Rules[0].From[0].Source.Principals)
	waf := aps[4]
	require.Equal(t, []string{"cluster.local/ns/default/sa/auth", "cluster.local/ns/default/sa/db", "cluster.local/ns/default/sa/www"},
		waf.Spec.Rules[0].From[0].Source.Principals)
	require.Equal(t, []string{"9000"}, waf.Spec.Rules[0].To[0].Operation.Ports)
	require.Contains(t, waf.Annotations[ReasonAnnotation], "ext_authz gRPC port 9000")

	for _, ap := range authorizationPolicies(loadPlan(t, goldenGraphs["shop"]), true) {
		require.Equal(t, "true", ap.Annotations[DryRunAnnotation], ap.Name)
	}
}

func TestAuthorizationPoliciesNarrowedAndGrouped(t *testing.T) {
	aps := authorizationPolicies(loadPlan(t, goldenGraphs["full"]), false)
	byName := map[string]*securityv1.AuthorizationPolicy{}
	for _, ap := range aps {
		byName[ap.Namespace+"/"+ap.Name] = ap
	}
	api := byName["back/meshwaf-allow-api"]
	require.NotNil(t, api)
	require.Len(t, api.Spec.Rules, 2)
	require.Equal(t, []string{"5000"}, api.Spec.Rules[0].To[0].Operation.Ports)
	require.Empty(t, api.Spec.Rules[0].To[0].Operation.Methods)
	op := api.Spec.Rules[1].To[0].Operation
	require.Equal(t, []string{"8443"}, op.Ports)
	require.Equal(t, []string{"GET", "POST"}, op.Methods)
	require.Equal(t, []string{"/v1/*"}, op.Paths)
	db := byName["back/meshwaf-allow-db"]
	require.Equal(t, []string{"example.org/ns/back/sa/api-sa", "example.org/ns/back/sa/batch"}, db.Spec.Rules[0].From[0].Source.Principals)
	require.Nil(t, byName["back/meshwaf-allow-batch"], "no grants, no policy: allow-nothing covers it")
	waf := byName["waf/meshwaf-ext-authz-callers"]
	require.Equal(t, map[string]string{"app.kubernetes.io/name": "meshwaf"}, waf.Spec.Selector.MatchLabels)
	require.Len(t, waf.Spec.Rules, 2)
	require.Equal(t, []string{"example.org/ns/monitoring/sa/prometheus"}, waf.Spec.Rules[1].From[0].Source.Principals)
	require.Equal(t, []string{"9091"}, waf.Spec.Rules[1].To[0].Operation.Ports)
}

func TestNetworkPolicies(t *testing.T) {
	nps := networkPolicies(loadPlan(t, goldenGraphs["full"]))
	byName := map[string]*networkingv1.NetworkPolicy{}
	for _, np := range nps {
		byName[np.Namespace+"/"+np.Name] = np
		require.Equal(t, kubeyaml.ManagedBy, np.Labels[kubeyaml.ManagedByLabel])
	}
	for _, ns := range []string{"back", "front"} {
		deny := byName[ns+"/"+DefaultDenyIngressName]
		require.NotNil(t, deny, ns)
		require.Empty(t, deny.Spec.PodSelector.MatchLabels)
		require.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, deny.Spec.PolicyTypes)
		require.Empty(t, deny.Spec.Ingress)
	}
	db := byName["back/meshwaf-allow-db"]
	require.Len(t, db.Spec.Ingress, 1)
	from := db.Spec.Ingress[0].From
	require.Len(t, from, 2)
	require.Equal(t, map[string]string{NamespaceNameLabel: "back"}, from[0].NamespaceSelector.MatchLabels)
	require.Equal(t, map[string]string{"app": "api", "tier": "backend"}, from[0].PodSelector.MatchLabels)
	require.Equal(t, map[string]string{"app": "batch"}, from[1].PodSelector.MatchLabels)
	require.Equal(t, int32(5432), db.Spec.Ingress[0].Ports[0].Port.IntVal)
	api := byName["back/meshwaf-allow-api"]
	require.Len(t, api.Spec.Ingress, 1, "both ports admit the same peer: one rule")
	require.Len(t, api.Spec.Ingress[0].Ports, 2)
	web := byName["front/meshwaf-allow-web"]
	require.Len(t, web.Spec.Ingress, 2)
	require.Equal(t, map[string]string{NamespaceNameLabel: "gw"}, web.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels)
	require.Equal(t, map[string]string{"app": "prometheus"}, web.Spec.Ingress[1].From[0].PodSelector.MatchLabels)
}

func TestRenderPoliciesOptions(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["shop"])
	_, err := renderPolicies(plan, RenderOptions{Format: FormatNetworkPolicy, DryRun: true})
	require.ErrorContains(t, err, "no dry-run")
	_, err = renderPolicies(plan, RenderOptions{Format: "cilium"})
	require.ErrorContains(t, err, `format "cilium"`)
	objs, err := renderPolicies(plan, RenderOptions{})
	require.NoError(t, err)
	require.Len(t, objs, 5)
	out, err := Generate(plan, RenderOptions{Format: FormatNetworkPolicy})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), "# Generated by meshwaf policy generate from ServiceGraph \"shop\""))
}

// Generate marshals on every CPU; the bytes must equal one sequential
// kubeyaml.Marshal, and reading them back keeps the order.
func TestGenerateLargeIsSequentialOutput(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: meshwaf.io/v1alpha1\nkind: ServiceGraph\nmetadata: {name: big}\nspec:\n  services:\n")
	for i := range 300 {
		fmt.Fprintf(&b, "  - {name: s%d, namespace: ns%d, ports: [{port: 8080}]}\n", i, i%7)
	}
	b.WriteString("  edges:\n")
	for i := range 300 {
		j := (i + 1) % 300
		fmt.Fprintf(&b, "  - {from: ns%d/s%d, to: ns%d/s%d}\n", i%7, i, j%7, j)
	}
	g, err := meshpolicy.Decode("big.yaml", []byte(b.String()))
	require.NoError(t, err)
	plan := meshpolicy.NewPlan(g)
	objs, err := renderPolicies(plan, RenderOptions{})
	require.NoError(t, err)
	require.Len(t, objs, 7+300)
	docs := make([]any, len(objs))
	for i, o := range objs {
		docs[i] = o
	}
	seq, err := kubeyaml.Marshal(docs...)
	require.NoError(t, err)
	par, err := marshalParallel(objs)
	require.NoError(t, err)
	require.Equal(t, string(seq), string(par))

	set := &PolicySet{}
	require.NoError(t, set.AddDocuments("big.yaml", par))
	require.Len(t, set.Policies, len(objs))
	for i, p := range set.Policies {
		require.Equal(t, objs[i].(*securityv1.AuthorizationPolicy).Name, p.Object.Name, i)
	}
}

// A path holding a comma stays one path, and callers whose path lists
// read alike once joined with commas keep rules of their own.
func TestAuthorizationPolicyPathsStayLists(t *testing.T) {
	g, err := meshpolicy.Decode("g.yaml", []byte(`apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: g}
spec:
  services:
  - {name: a, serviceAccount: shared}
  - {name: b, serviceAccount: shared}
  - {name: c, ports: [{port: 80, protocol: HTTP}]}
  - {name: d, serviceAccount: shared}
  edges:
  - {from: a, to: c, paths: ["/a,/b"], methods: [GET]}
  - {from: b, to: c, paths: ["/a", "/b"], methods: [GET]}
  - {from: d, to: c, paths: ["/a*"], methods: [GET]}
`))
	require.NoError(t, err)
	var c *securityv1.AuthorizationPolicy
	for _, ap := range authorizationPolicies(meshpolicy.NewPlan(g), false) {
		if ap.Name == "meshwaf-allow-c" {
			c = ap
		}
	}
	require.NotNil(t, c)
	var paths [][]string
	for _, r := range c.Spec.Rules {
		require.Equal(t, []string{"cluster.local/ns/default/sa/shared"}, r.From[0].Source.Principals)
		require.Equal(t, []string{"80"}, r.To[0].Operation.Ports)
		require.Equal(t, []string{"GET"}, r.To[0].Operation.Methods)
		paths = append(paths, r.To[0].Operation.Paths)
	}
	require.Equal(t, [][]string{{"/a", "/b"}, {"/a*"}, {"/a,/b"}}, paths)
}
