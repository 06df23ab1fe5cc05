package istio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// verify compares the exact methods and paths of a narrowed flow with the
// graph's edge: before, it only checked that the flow was narrowed, so
// every fixture below passed as OK. One fixture per failure mode, against
// testdata/requests/graph.yaml (www -> api:8080, GET or POST on
// /admin/users and /x,y).
func TestVerifyComparesRequests(t *testing.T) {
	const flow = `  shop/www -> shop/api:8080: planned methods ["GET", "POST"] paths ["/admin/users", "/x,y"]; allowed `
	const mismatch = "MISMATCH: 1 with other requests\n"
	tests := []struct {
		fixture string
		want    string // the diff verify prints
	}{
		{"comma-split", "requests: planned and allowed for other methods or paths (1):\n" + flow +
			`methods ["GET", "POST"] paths ["/admin/users", "/x", "y"] (e.g. GET "/x": allowed, not planned)` + "\n" + mismatch},
		{"widened-prefix", "requests: planned and allowed for other methods or paths (1):\n" + flow +
			`methods ["GET", "POST"] paths ["/admin/*", "/x,y"] (e.g. GET "/admin/z": allowed, not planned)` + "\n" + mismatch},
		{"dropped-method", "requests: planned and allowed for other methods or paths (1):\n" + flow +
			`methods ["GET"] paths ["/admin/users", "/x,y"] (e.g. POST "/admin/users": planned, denied)` + "\n" + mismatch},
		{"extra-path", "requests: planned and allowed for other methods or paths (1):\n" + flow +
			`methods ["GET", "POST"] paths ["/admin/users", "/debug", "/x,y"] (e.g. GET "/debug": allowed, not planned)` + "\n" + mismatch},
		{"identical", "OK: the policies allow exactly the planned flows\n"},
		{"equivalent", "OK: the policies allow exactly the planned flows\n"},
	}
	dir := filepath.Join("testdata", "requests")
	plan := loadPlan(t, filepath.Join(dir, "graph.yaml"))
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			set, err := LoadPolicies(filepath.Join(dir, tt.fixture+".yaml"))
			require.NoError(t, err)
			got, notes := Evaluate(plan, set.Policies, EvalOptions{})
			require.Empty(t, notes)
			diff := plan.Compare(plan.Expected(), got)
			var out strings.Builder
			require.NoError(t, diff.WriteDiff(&out, false))
			require.Equal(t, tt.want, out.String())
		})
	}
}

// The identical fixture is what generate renders from the graph today.
func TestRequestsFixtureIsTheRendering(t *testing.T) {
	dir := filepath.Join("testdata", "requests")
	plan := loadPlan(t, filepath.Join(dir, "graph.yaml"))
	out, err := Generate(plan, RenderOptions{})
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(dir, "identical.yaml"))
	require.NoError(t, err)
	require.Equal(t, string(want), string(out))
}

// Requests verify cannot evaluate make a narrowed flow unresolved, never
// OK or different: hosts in the same rule, a path template, and a second
// rule that admits the source only conditionally. They count with
// --strict only.
func TestVerifyUnresolvedRequests(t *testing.T) {
	plan := loadPlan(t, filepath.Join("testdata", "requests", "graph.yaml"))
	head := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: meshwaf-allow-api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}]
    to:
    - operation: {methods: [GET, POST], paths: [/admin/users, "/x,y"]}
`
	tests := []struct{ name, extra string }{
		{"hosts", "    - operation: {hosts: [api.example], paths: [/debug]}\n"},
		{"path template", "    - operation: {methods: [GET], paths: [\"/x/{*}\"]}\n"},
		{"conditional second rule", "  - from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}]\n    to: [{operation: {paths: [/debug]}}]\n    when: [{key: \"request.headers[x-debug]\", values: [\"1\"]}]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := Evaluate(plan, policiesFrom(t, head+tt.extra), EvalOptions{})
			diff := plan.Compare(plan.Expected(), got)
			require.Equal(t, []meshpolicy.Flow{{From: "shop/www", To: "shop/api", Port: 8080}}, diff.Unresolved)
			require.Empty(t, diff.Requests)
			require.False(t, diff.Mismatch(false))
			require.True(t, diff.Mismatch(true))
		})
	}
}

// In ambient mode the waypoint narrows requests, and its narrowing is
// compared the same way.
func TestVerifyAmbientComparesRequests(t *testing.T) {
	plan := loadAmbientPlan(t, ambientGraph)
	got, _ := EvaluateAmbient(plan, ambientGenerated(t, plan, ""), EvalOptions{})
	diff := plan.Compare(plan.Expected(), got)
	require.False(t, diff.Mismatch(true), "generated: %+v", diff)

	got, _ = EvaluateAmbient(plan, ambientGenerated(t, plan, `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: www-to-api-admin, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: api}]
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}], to: [{operation: {paths: ["/admin/*"]}}]}]
`), EvalOptions{})
	diff = plan.Compare(plan.Expected(), got)
	require.Len(t, diff.Requests, 1)
	require.Equal(t, `shop/www -> shop/api:8080: planned methods ["GET", "POST"] paths ["/api/*"]; `+
		`allowed methods ["GET", "POST"] paths ["/api/*"] or paths ["/admin/*"] (e.g. GET "/admin/z": allowed, not planned)`, diff.Requests[0].String())
	require.Empty(t, diff.Broader)
	require.True(t, diff.Mismatch(false))
}
