// Promote against a real Prometheus (startPrometheus: the promtest harness,
// a TSDB backfilled from OpenMetrics with promtool, served by prometheus).

package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// shadowSeries is OpenMetrics for one sidecar's RBAC shadow-denial
// counter of dry-run ALLOW policies, named and tagged as Istio's proxies
// export it (see rollout.ShadowDeniedSelector), every 15 s over the last
// 30 minutes: value(age) gives the value at that age. The TCP caller
// auth -> db is in istio_tcp_connections_opened_total alongside.
func shadowSeries(now time.Time, value func(age time.Duration) int) string {
	var rbac, tcp strings.Builder
	rbac.WriteString("# TYPE envoy_tcp_inbound_0_0_0_0_5432_rbac gauge\n")
	tcp.WriteString("# TYPE istio_tcp_connections_opened counter\n")
	for age := 30 * time.Minute; age >= 0; age -= 15 * time.Second {
		ts := now.Add(-age).Unix()
		for _, r := range []struct {
			result string
			v      int
		}{{"denied", value(age)}, {"allowed", 1000 - int(age/time.Second)}} {
			fmt.Fprintf(&rbac, "envoy_tcp_inbound_0_0_0_0_5432_rbac{authz_dry_run_action=\"allow\",authz_dry_run_result=%q,namespace=\"rollout\",pod=\"db-7d9f\"} %d %d\n", r.result, r.v, ts)
		}
		fmt.Fprintf(&tcp, "istio_tcp_connections_opened_total{reporter=\"destination\",source_principal=\"spiffe://cluster.local/ns/rollout/sa/auth\","+
			"destination_principal=\"spiffe://cluster.local/ns/rollout/sa/db\",destination_workload=\"db\",destination_workload_namespace=\"rollout\"} %d %d\n", value(age), ts)
	}
	return rbac.String() + tcp.String() + "# EOF\n"
}

// TestPolicyPromotePrometheus: with backfilled shadow denials inside the
// window promote refuses and names auth -> db; once the counter has been
// flat for longer than --stable-for it promotes.
func TestPolicyPromotePrometheus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := env.cluster.ensureNamespace(ctx, rolloutNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
	})
	graph := writeRolloutGraph(t, true)
	applyChanges(t, "-f", graph, "--stage", "dry-run")
	// Staged an hour ago, as if applied then.
	hourAgo := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for name := range livePolicies(t, ctx) {
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"meshwaf.io/staged-at":%q}}}`, hourAgo)
		if _, err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()

	// Denials 5 minutes ago: inside a 10m window.
	denying := startPrometheus(t, shadowSeries(now, func(age time.Duration) int {
		if age > 5*time.Minute {
			return 0
		}
		return 3
	}))
	out := mustCode(t, rolloutDrift, "policy", "promote", "-f", graph, "--prometheus", denying, "--stable-for", "10m")
	for _, want := range []string{"rollout/db-7d9f: 3", "cluster.local/ns/rollout/sa/auth -> rollout/db (3, istio_tcp_connections_opened_total)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("promote output lacks %q", want)
		}
	}
	for name, u := range livePolicies(t, ctx) {
		if u.GetAnnotations()["istio.io/dry-run"] != "true" {
			t.Errorf("%s: promoted despite shadow denials", name)
		}
	}

	// The last denial 20 minutes ago: zero over the last 10m.
	quiet := startPrometheus(t, shadowSeries(now, func(age time.Duration) int {
		if age > 20*time.Minute {
			return 0
		}
		return 3
	}))
	mustCode(t, 0, "policy", "promote", "-f", graph, "--prometheus", quiet, "--stable-for", "10m")
	for name, u := range livePolicies(t, ctx) {
		if _, ok := u.GetAnnotations()["istio.io/dry-run"]; ok {
			t.Errorf("%s: still dry-run", name)
		}
	}
}
