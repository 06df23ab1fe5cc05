package istio

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// verifyGenerated renders the plan to YAML, reads it back as a user's file
// would be read, and evaluates it.
func verifyGenerated(t *testing.T, plan *meshpolicy.Plan, dryRun bool) (*meshpolicy.Reachability, []string) {
	t.Helper()
	out, err := Generate(plan, RenderOptions{DryRun: dryRun})
	require.NoError(t, err)
	set := &PolicySet{}
	require.NoError(t, set.AddDocuments("generated.yaml", out))
	return Evaluate(plan, set.Policies, EvalOptions{})
}

func allowedFlows(plan *meshpolicy.Plan, r *meshpolicy.Reachability) []string {
	var out []string
	for i, d := range plan.Destinations {
		for j, dp := range d.Ports {
			r.Allowed[plan.DestPortIndex(i, j)].Each(func(s int) {
				out = append(out, fmt.Sprintf("%s -> %s:%d", plan.Sources[s].ID, d.ID, dp.Port))
			})
		}
	}
	return out
}

// The seed scenario: www may call auth and db; auth -> db (the seed's
// attack path), db -> www and everything else is denied.
func TestSeedScenario(t *testing.T) {
	plan := loadPlan(t, goldenGraphs["shop"])
	got, notes := verifyGenerated(t, plan, false)
	require.Empty(t, notes)
	require.Equal(t, []string{
		"default/www -> default/auth:8080",
		"default/www -> default/db:8080",
		"ingress-gateway -> default/www:8080",
		"default/auth -> meshwaf-system/meshwaf:9000",
		"default/db -> meshwaf-system/meshwaf:9000",
		"default/www -> meshwaf-system/meshwaf:9000",
	}, allowedFlows(plan, got))
	d := plan.Compare(plan.Expected(), got)
	require.False(t, d.Mismatch(true), "%+v", d)

	// Dry-run policies are not enforced: everything is open again.
	open, notes := verifyGenerated(t, plan, true)
	require.Len(t, notes, 5)
	require.Contains(t, plan.Compare(plan.Expected(), open).Extra, meshpolicy.Flow{From: "default/auth", To: "default/db", Port: 8080})

	// A hand edit that lets auth reach db is caught and named.
	set, err := LoadPolicies(filepath.Join("testdata", "policies", "shop-auth-to-db.yaml"))
	require.NoError(t, err)
	edited, _ := Evaluate(plan, set.Policies, EvalOptions{})
	d = plan.Compare(plan.Expected(), edited)
	require.True(t, d.Mismatch(false))
	require.Equal(t, []meshpolicy.Flow{{From: "default/auth", To: "default/db", Port: 8080}}, d.Extra)
	require.Empty(t, d.Missing)
}

// randomGraph builds a valid graph: services in up to three namespaces
// with unique selectors, sometimes shared service accounts, HTTP and TCP
// ports, narrowed edges, ingress, inspection and a scraper.
func randomGraph(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString("apiVersion: meshwaf.io/v1alpha1\nkind: ServiceGraph\nmetadata: {name: random}\nspec:\n")
	if r.IntN(2) == 0 {
		b.WriteString("  settings:\n    scraper: {namespace: monitoring, serviceAccount: prometheus}\n")
	}
	b.WriteString("  services:\n")
	n := 1 + r.IntN(12)
	type svc struct {
		ref   string
		ports []int
		http  map[int]bool
	}
	var svcs []svc
	for i := range n {
		ns := fmt.Sprintf("ns%d", r.IntN(3))
		s := svc{ref: fmt.Sprintf("%s/s%d", ns, i), http: map[int]bool{}}
		fmt.Fprintf(&b, "  - name: s%d\n    namespace: %s\n", i, ns)
		if r.IntN(4) == 0 {
			fmt.Fprintf(&b, "    serviceAccount: shared%d\n", r.IntN(2))
		}
		if r.IntN(3) == 0 {
			fmt.Fprintf(&b, "    selector: {app: s%d, tier: t%d}\n", i, r.IntN(2))
		}
		b.WriteString("    ports:\n")
		for p := range r.IntN(3) {
			port := 8000 + p
			proto := []string{"HTTP", "TCP", "GRPC"}[r.IntN(3)]
			s.http[port] = proto != "TCP"
			metrics := r.IntN(5) == 0
			fmt.Fprintf(&b, "    - {port: %d, protocol: %s, metrics: %v}\n", port, proto, metrics)
			s.ports = append(s.ports, port)
		}
		fmt.Fprintf(&b, "    ingress: %v\n    inspect: %v\n", r.IntN(3) == 0, r.IntN(2) == 0)
		svcs = append(svcs, s)
	}
	b.WriteString("  edges:\n")
	seen := map[string]bool{}
	for range r.IntN(3 * n) {
		from, to := svcs[r.IntN(n)], svcs[r.IntN(n)]
		if len(to.ports) == 0 {
			continue
		}
		port := to.ports[r.IntN(len(to.ports))]
		key := fmt.Sprintf("%s %s %d", from.ref, to.ref, port)
		if seen[key] {
			continue
		}
		seen[key] = true
		fmt.Fprintf(&b, "  - {from: %s, to: %s, ports: [%d]", from.ref, to.ref, port)
		if to.http[port] && r.IntN(3) == 0 {
			b.WriteString(", methods: [GET], paths: [\"/api/*\"]")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// Property: for random graphs, verify(generate(graph)) finds no mismatch.
func TestRoundTripRandomGraphs(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2026))
	for i := range 300 {
		src := randomGraph(r)
		g, err := meshpolicy.Decode(fmt.Sprintf("random-%d.yaml", i), []byte(src))
		require.NoError(t, err, src)
		plan := meshpolicy.NewPlan(g)
		got, notes := verifyGenerated(t, plan, false)
		require.Empty(t, notes)
		d := plan.Compare(plan.Expected(), got)
		require.False(t, d.Mismatch(true), "graph %d:\n%s\ndiff: %+v", i, src, d)
	}
}
