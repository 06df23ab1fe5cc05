package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// demoShadowSeries is OpenMetrics for auth's sidecar under the discovered
// graph's dry-run policies, every 15 s over the last 30 minutes: its RBAC
// shadow counters (denied: value(age); allowed: www's calls) and the
// plaintext legacy caller's requests, which rise with the denials.
func demoShadowSeries(now time.Time, value func(age time.Duration) int) string {
	var rbac, req strings.Builder
	rbac.WriteString("# TYPE envoy_http_inbound_0_0_0_0_8080_rbac gauge\n")
	req.WriteString("# TYPE istio_requests counter\n")
	for age := 30 * time.Minute; age >= 0; age -= 15 * time.Second {
		ts := now.Add(-age).Unix()
		for _, r := range []struct {
			result string
			v      int
		}{{"denied", value(age)}, {"allowed", 5000 - int(age/time.Second)}} {
			fmt.Fprintf(&rbac, "envoy_http_inbound_0_0_0_0_8080_rbac{authz_dry_run_action=\"allow\",authz_dry_run_result=%q,namespace=\"default\",pod=\"auth-5c8f\"} %d %d\n", r.result, r.v, ts)
		}
		fmt.Fprintf(&req, "istio_requests_total{reporter=\"destination\",source_principal=\"unknown\",source_workload=\"legacy\",connection_security_policy=\"none\","+
			"destination_principal=\"spiffe://cluster.local/ns/default/sa/auth\",destination_workload=\"auth\",destination_workload_namespace=\"default\"} %d %d\n", value(age), ts)
	}
	return rbac.String() + req.String() + "# EOF\n"
}

// TestDiscoverToEnforced is the walk-through of the README on the demo,
// against the API server and real Prometheus servers: graph discover
// writes the golden graph (whose policies test/istio's
// TestDiscoveredGraphRBAC proves allow exactly the observed flows), policy
// apply --stage dry-run stores them all in dry run, promote refuses while
// backfilled shadow denials lie inside --stable-for and names the flow
// they come from (the plaintext legacy caller), and promotes once the
// counter has been flat for the window.
func TestDiscoverToEnforced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The demo without its hand-written AuthorizationPolicies: no graph,
	// no policies yet.
	for _, u := range installDemo(t, ctx) {
		if u.GetKind() != "AuthorizationPolicy" {
			continue
		}
		if err := env.cluster.dyn.Resource(apGVR).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	add(t, ctx, batchJob)
	owned := metav1.ListOptions{LabelSelector: "meshwaf.io/graph=discovered"}
	policies := func() map[string]*unstructured.Unstructured {
		t.Helper()
		l, err := env.cluster.dyn.Resource(apGVR).Namespace("").List(context.Background(), owned)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*unstructured.Unstructured{}
		for i := range l.Items {
			m[l.Items[i].GetNamespace()+"/"+l.Items[i].GetName()] = &l.Items[i]
		}
		return m
	}
	t.Cleanup(func() {
		for _, u := range policies() {
			_ = env.cluster.dyn.Resource(apGVR).Namespace(u.GetNamespace()).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
		}
	})

	// 1. Discover: the golden graph.
	code, out, stderr := discover(t, startIstioPrometheus(t, demoFlows()).URL)
	if code != 0 {
		t.Fatalf("graph discover: exit %d: %s", code, stderr)
	}
	checkGolden(t, "plain.yaml", out)
	graph := filepath.Join(t.TempDir(), "discovered.yaml")
	if err := os.WriteFile(graph, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}

	// 2. Apply in dry run: every generated policy stored, none enforced.
	changes := applyChanges(t, "-f", graph, "--stage", "dry-run")
	live := policies()
	if len(live) == 0 || len(live) != len(changes) {
		t.Fatalf("apply --stage dry-run: changes %v, live %d policies", changes, len(live))
	}
	for key, u := range live {
		if changes[key] != "created" {
			t.Errorf("%s: %q, want created", key, changes[key])
		}
		if u.GetAnnotations()["istio.io/dry-run"] != "true" {
			t.Errorf("%s: not in dry run", key)
		}
	}
	// Staged an hour ago, as if applied then.
	hourAgo := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, u := range live {
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"meshwaf.io/staged-at":%q}}}`, hourAgo)
		if _, err := env.cluster.dyn.Resource(apGVR).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()

	// 3. Shadow denials 5 minutes ago, inside the 10m window: refused.
	denying := startPrometheus(t, demoShadowSeries(now, func(age time.Duration) int {
		if age > 5*time.Minute {
			return 0
		}
		return 4
	}))
	report := mustCode(t, rolloutDrift, "policy", "promote", "-f", graph, "--prometheus", denying, "--stable-for", "10m")
	for _, want := range []string{"default/auth-5c8f: 4", "unknown -> default/auth (4, istio_requests_total)"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("promote output lacks %q", want)
		}
	}
	for key, u := range policies() {
		if u.GetAnnotations()["istio.io/dry-run"] != "true" {
			t.Errorf("%s: promoted despite shadow denials", key)
		}
	}

	// 4. The last denial 20 minutes ago, the counter flat since: promoted.
	quiet := startPrometheus(t, demoShadowSeries(now, func(age time.Duration) int {
		if age > 20*time.Minute {
			return 0
		}
		return 4
	}))
	mustCode(t, 0, "policy", "promote", "-f", graph, "--prometheus", quiet, "--stable-for", "10m")
	after := policies()
	if len(after) != len(live) {
		t.Errorf("%d policies after promote, want %d", len(after), len(live))
	}
	for key, u := range after {
		if _, ok := u.GetAnnotations()["istio.io/dry-run"]; ok {
			t.Errorf("%s: still dry-run", key)
		}
	}
}
