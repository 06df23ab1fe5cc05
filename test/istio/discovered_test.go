package istiotest

import (
	"fmt"
	"maps"
	"testing"
)

// discoveredGraph is what `meshwaf graph discover` wrote from the demo's
// Istio series; test/cluster's TestGraphDiscover keeps it byte-identical
// to discover's output against a real Prometheus and API server.
const discoveredGraph = "test/cluster/testdata/discover/plain.yaml"

// TestDiscoveredGraphRBAC: the policies generated from the discovered
// graph, fed to Istio's discovery server, allow exactly the reachability
// the series showed: the ingress gateway to www, www to auth and db, the
// low-volume batch job to db (over --min-requests 1), the inspected
// sidecars to meshwaf, and nothing else; the plaintext legacy caller of
// auth in particular is not admitted. Enforced and in dry run (shadow
// rules only).
func TestDiscoveredGraphRBAC(t *testing.T) {
	g := readGraph(t, discoveredGraph)
	ws := graphWorkloads(g)
	td := g.Spec.TrustDomain
	sa := func(name string) string { return fmt.Sprintf("spiffe://%s/ns/default/sa/%s", td, name) }

	// The observed flows, stated outright from test/cluster's demoFlows so
	// a change of the golden file cannot silently change what is proven.
	observed := map[string]map[string]bool{
		"www":   {fmt.Sprintf(ingressPrincipal, td) + " -> 8080": true},
		"auth":  {sa("www") + " -> 8080": true},
		"db":    {sa("www") + " -> 8080": true, sa("batch") + " -> 8080": true},
		"batch": {},
	}
	want := plannedFlows(t, g, ws)
	if !maps.EqualFunc(want, observed, maps.Equal) {
		t.Fatalf("%s plans %v, want the observed %v", discoveredGraph, want, observed)
	}
	for _, flows := range want {
		if flows[sa("legacy")+" -> 8080"] {
			t.Fatal("the plaintext caller is planned")
		}
	}

	// meshwaf as the install renders it: the inspected sidecars (www,
	// auth, db called it) reach its gRPC port.
	mw := installWorkload(t)
	want[mw.name] = map[string]bool{}
	inspected := 0
	for _, w := range ws {
		if w.inspect {
			inspected++
			want[mw.name][w.principal(td)+" -> 9000"] = true
		}
	}
	if inspected != 3 {
		t.Fatalf("%d inspected services in %s, want www, auth and db", inspected, discoveredGraph)
	}
	checkGeneratedRBAC(t, discoveredGraph, append(ws, mw), want)
}
