package istiotest

import (
	"fmt"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// ingressPrincipal is the identity of Istio's default ingress gateway.
const ingressPrincipal = "spiffe://%s/ns/istio-system/sa/istio-ingressgateway-service-account"

// plannedFlows is what the graph allows, per destination workload, as
// "principal -> port": each edge's source on each of its ports, and the
// ingress gateway on every port of a service with ingress: true.
func plannedFlows(t *testing.T, g *graph, ws []workload) map[string]map[string]bool {
	t.Helper()
	byRef := map[string]workload{}
	for _, w := range ws {
		byRef[w.namespace+"/"+w.name] = w
	}
	lookup := func(ref string) workload {
		if !strings.Contains(ref, "/") {
			var found []workload
			for _, w := range ws {
				if w.name == ref {
					found = append(found, w)
				}
			}
			if len(found) != 1 {
				t.Fatalf("graph reference %q matches %d services", ref, len(found))
			}
			return found[0]
		}
		w, ok := byRef[ref]
		if !ok {
			t.Fatalf("graph reference %q: no such service", ref)
		}
		return w
	}
	want := map[string]map[string]bool{}
	for _, w := range ws {
		want[w.name] = map[string]bool{}
	}
	for _, s := range g.Spec.Services {
		if !s.Ingress {
			continue
		}
		for _, p := range s.Ports {
			want[s.Name][fmt.Sprintf(ingressPrincipal, g.Spec.TrustDomain)+" -> "+fmt.Sprint(p.Port)] = true
		}
	}
	for _, e := range g.Spec.Edges {
		from, to := lookup(e.From), lookup(e.To)
		ports := e.Ports
		if len(ports) == 0 {
			ports = to.ports
		}
		for _, p := range ports {
			want[to.name][from.principal(g.Spec.TrustDomain)+" -> "+fmt.Sprint(p)] = true
		}
	}
	return want
}

// TestPolicyRBAC feeds the AuthorizationPolicies `meshwaf policy generate`
// renders for the seed graph, and the graph's workloads, to Istio's
// discovery server, and reads back the RBAC filters Istio puts on each
// sidecar's inbound filter chains. Every chain that can carry traffic must
// enforce exactly the planned flows: www -> auth:8080, www -> db:8080,
// ingress -> www:8080, and nothing else (auth -> db in particular).
func TestPolicyRBAC(t *testing.T) {
	g := readGraph(t, shopGraph)
	ws := graphWorkloads(g)
	want := plannedFlows(t, g, ws)

	// meshwaf itself, as the install renders it: the sidecars of the
	// inspected workloads must reach its gRPC port (no lockout), and
	// nothing else is planned for it.
	mw := installWorkload(t)
	want[mw.name] = map[string]bool{}
	for _, w := range ws {
		if w.inspect {
			want[mw.name][w.principal(g.Spec.TrustDomain)+" -> 9000"] = true
		}
	}
	ws = append(ws, mw)

	// The seed scenario, stated outright so a change of the example graph
	// cannot silently weaken the test.
	www := fmt.Sprintf("spiffe://%s/ns/default/sa/www", g.Spec.TrustDomain)
	auth := fmt.Sprintf("spiffe://%s/ns/default/sa/auth", g.Spec.TrustDomain)
	for _, f := range []struct {
		dest, flow string
		allowed    bool
	}{
		{"auth", www + " -> 8080", true},
		{"db", www + " -> 8080", true},
		{"www", fmt.Sprintf(ingressPrincipal, g.Spec.TrustDomain) + " -> 8080", true},
		{"db", auth + " -> 8080", false},
	} {
		if want[f.dest][f.flow] != f.allowed {
			t.Fatalf("the seed graph %s no longer plans %s on %s = %v", shopGraph, f.flow, f.dest, f.allowed)
		}
	}

	checkGeneratedRBAC(t, shopGraph, ws, want)
}

// checkGeneratedRBAC renders the policies of graphFile, enforced and with
// --dry-run, feeds them and the workloads ws to Istio's discovery server,
// and checks each sidecar's inbound RBAC against want (checkInboundRBAC).
func checkGeneratedRBAC(t *testing.T, graphFile string, ws []workload, want map[string]map[string]bool) {
	t.Helper()
	for _, tc := range []struct {
		name   string
		args   []string
		dryRun bool
	}{
		{"enforced", nil, false},
		{"dry-run", []string{"--dry-run"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := meshwaf(t, append([]string{"policy", "generate", "-f", graphFile}, tc.args...)...)
			cfgs, others := istioConfigs(t, "policy generate", out)
			for _, o := range others {
				t.Errorf("policy generate: %s %s is not an Istio object", o.Kind, o.Name)
			}
			if len(cfgs) == 0 {
				t.Fatal("policy generate: no Istio objects")
			}
			s := newServer(t, cfgs, kubeObjects(ws), nil)
			for _, w := range ws {
				t.Run(w.name, func(t *testing.T) {
					for _, p := range checkInboundRBAC(t, s.Listeners(proxy(s, w)), want[w.name], tc.dryRun) {
						t.Error(p)
					}
				})
			}
		})
	}
}

// checkInboundRBAC checks every inbound chain of one sidecar and returns
// the problems. Enforced: the chain's enforced ALLOW rules are exactly
// want, and there are no DENY rules. Dry run: nothing is enforced and the
// shadow ALLOW rules are exactly want.
func checkInboundRBAC(t *testing.T, ls []*listenerT, want map[string]bool, dryRun bool) []string {
	t.Helper()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	checked := 0
	for _, fc := range inboundChains(t, ls) {
		if isBlackhole(fc) {
			continue
		}
		checked++
		r := chainRBAC(t, fc)
		enforced, unknownE := flows(r.rules, rbacv3.RBAC_ALLOW)
		shadow, unknownS := flows(r.shadow, rbacv3.RBAC_ALLOW)
		denied, _ := flows(r.rules, rbacv3.RBAC_DENY)
		for _, u := range append(unknownE, unknownS...) {
			add("%s: RBAC the test cannot read: %s", chainName(fc), u)
		}
		if len(denied) > 0 {
			add("%s: unexpected DENY rules: %s", chainName(fc), joinSet(denied))
		}
		got := enforced
		if dryRun {
			if len(r.rules) > 0 {
				add("%s: --dry-run policies are enforced: %s", chainName(fc), joinSet(enforced))
			}
			got = shadow
		} else if len(r.rules) == 0 {
			add("%s: no enforced RBAC filter: the chain accepts every caller", chainName(fc))
			continue
		}
		for _, f := range sortedKeys(want) {
			if !got[f] {
				add("%s: planned flow missing: %s", chainName(fc), f)
			}
		}
		for _, f := range sortedKeys(got) {
			if !want[f] {
				add("%s: flow not in the plan: %s", chainName(fc), f)
			}
		}
	}
	if checked == 0 {
		add("no inbound filter chains")
	}
	t.Logf("%d inbound chains checked; flows: %s", checked, joinSet(want))
	return problems
}

// TestPolicyRBACCatchesExtraFlow checks the checker: the generated policies
// plus one hand-written ALLOW for auth -> db must be reported on db's
// chains, and only there.
func TestPolicyRBACCatchesExtraFlow(t *testing.T) {
	g := readGraph(t, shopGraph)
	ws := graphWorkloads(g)
	want := plannedFlows(t, g, ws)
	out := meshwaf(t, "policy", "generate", "-f", shopGraph) + `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: hand-written-auth-to-db, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/auth]}}], to: [{operation: {ports: ["8080"]}}]}]
`
	cfgs, _ := istioConfigs(t, "policy generate + auth -> db", out)
	s := newServer(t, cfgs, kubeObjects(ws), nil)
	for _, w := range ws {
		problems := checkInboundRBAC(t, s.Listeners(proxy(s, w)), want[w.name], false)
		extra := "flow not in the plan: spiffe://cluster.local/ns/default/sa/auth -> 8080"
		found := 0
		for _, p := range problems {
			if strings.HasSuffix(p, extra) {
				found++
			} else {
				t.Errorf("%s: unexpected problem: %s", w.name, p)
			}
		}
		if w.name == "db" && found == 0 {
			t.Errorf("db: the extra flow auth -> db was not reported")
		}
		if w.name != "db" && found > 0 {
			t.Errorf("%s: the extra flow reported on the wrong workload", w.name)
		}
	}
}
