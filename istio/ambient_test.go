package istio

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/golden"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

const ambientGraph = "testdata/graphs/ambient.yaml"

func loadAmbientPlan(t *testing.T, path string) *meshpolicy.Plan {
	t.Helper()
	g, err := meshpolicy.Load(path)
	require.NoError(t, err)
	p, err := meshpolicy.NewAmbientPlan(g)
	require.NoError(t, err)
	return p
}

func TestGenerateAmbientGolden(t *testing.T) {
	for name, path := range map[string]string{"ambient": ambientGraph, "shop": goldenGraphs["shop"]} {
		for _, v := range []struct {
			name string
			opts RenderOptions
		}{
			{"ambient", RenderOptions{}},
			{"ambient-dry-run", RenderOptions{DryRun: true}},
		} {
			t.Run(name+"/"+v.name, func(t *testing.T) {
				out, err := GenerateAmbient(loadAmbientPlan(t, path), v.opts)
				require.NoError(t, err)
				again, err := GenerateAmbient(loadAmbientPlan(t, path), v.opts)
				require.NoError(t, err)
				require.Equal(t, string(out), string(again), "deterministic")
				golden.Check(t, filepath.Join("testdata", "golden", name+"."+v.name+".yaml"), out)
			})
		}
	}
}

// ambientGenerated parses what GenerateAmbient renders for the plan, plus
// extra YAML documents.
func ambientGenerated(t *testing.T, plan *meshpolicy.Plan, extra string) []Policy {
	t.Helper()
	out, err := GenerateAmbient(plan, RenderOptions{})
	require.NoError(t, err)
	set := &PolicySet{}
	require.NoError(t, set.AddDocuments("gen.yaml", []byte(string(out)+extra)))
	return set.Policies
}

func TestEvaluateAmbient(t *testing.T) {
	plan := loadAmbientPlan(t, ambientGraph)
	const (
		ztunnelL7 = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l7-on-ztunnel, namespace: shop}
spec:
  selector: {matchLabels: {app: cache}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/orders]}}], to: [{operation: {methods: [GET]}}]}]
`
		extraAtWaypoint = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-to-api, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/orders]}}]}]
`
		selectorAtWaypoint = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-to-api-selector, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/orders]}}]}]
`
		wwwToAPIAll = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: www-to-api, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: api}]
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}]}]
`
		denyAtWaypoint = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-www, namespace: shop}
spec:
  action: DENY
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}]}]
`
	)
	tests := []struct {
		name       string
		policies   []Policy
		missing    []string
		extra      []string
		broader    []string
		noteSubstr string
	}{
		{name: "generated", policies: ambientGenerated(t, plan, "")},
		{name: "sidecar policies lock the waypoint out", policies: func() []Policy {
			g, err := meshpolicy.Load(ambientGraph)
			require.NoError(t, err)
			out, err := Generate(meshpolicy.NewPlan(g), RenderOptions{})
			require.NoError(t, err)
			set := &PolicySet{}
			require.NoError(t, set.AddDocuments("sidecar.yaml", out))
			return set.Policies
		}()},
		{name: "L7 rule on ztunnel never matches", policies: ambientGenerated(t, plan, ztunnelL7),
			noteSubstr: "shop/l7-on-ztunnel: ALLOW methods bound to ztunnel (no targetRefs), which enforces L4 only: its rules with them never match"},
		{name: "unnarrowed at the waypoint", policies: ambientGenerated(t, plan, wwwToAPIAll), broader: []string{"shop/www -> shop/api:8080"}},
		{name: "extra caller at the waypoint", policies: ambientGenerated(t, plan, extraAtWaypoint),
			extra: []string{"shop/orders -> shop/api:8080"}},
		{name: "selector policies do not reach the waypoint", policies: ambientGenerated(t, plan, selectorAtWaypoint)},
		{name: "DENY on the waypoint", policies: ambientGenerated(t, plan, denyAtWaypoint),
			missing: []string{"shop/www -> shop/api:8080", "shop/www -> shop/orders:8080"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes := EvaluateAmbient(plan, tt.policies, EvalOptions{})
			diff := plan.Compare(plan.Expected(), got)
			if tt.name == "sidecar policies lock the waypoint out" {
				// Sidecar policies admit the callers at the workload, not
				// the waypoint: every flow through the waypoint is missing.
				require.Contains(t, flowStrings(diff.Missing), "shop/www -> shop/api:8080")
				require.Contains(t, flowStrings(diff.Missing), "waypoint:shop/waypoint -> shop/api:8080")
				return
			}
			require.Equal(t, tt.missing, flowStrings(diff.Missing), "missing")
			require.Equal(t, tt.extra, flowStrings(diff.Extra), "extra")
			require.Equal(t, tt.broader, flowStrings(diff.Broader), "broader")
			require.Empty(t, diff.Conditional)
			if tt.noteSubstr != "" {
				require.Contains(t, strings.Join(notes, "\n"), tt.noteSubstr)
			} else {
				require.NotContains(t, strings.Join(notes, "\n"), "warning:")
			}
		})
	}
}

func flowStrings(fs []meshpolicy.Flow) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}
