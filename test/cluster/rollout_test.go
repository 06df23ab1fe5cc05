package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// rolloutGraph is the graph of the rollout tests, in a namespace of its
// own so that doctor's tests never see its policies. Without inspect and
// ingress, meshwaf adds no destination of its own.
const rolloutGraph = `apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: rollout-test}
spec:
  services:
  - {name: www, namespace: rollout, ports: [{port: 8080, protocol: HTTP}]}
  - {name: auth, namespace: rollout, ports: [{port: 8080, protocol: HTTP}]}
%s
  edges:
  - {from: www, to: auth, ports: [8080]}
%s
`

const (
	rolloutNS    = "rollout"
	rolloutDrift = 3 // policy diff: drift; policy promote: refused
)

var apGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}

// writeRolloutGraph writes the graph, with or without the db service
// and its edge, and returns its path.
func writeRolloutGraph(t *testing.T, withDB bool) string {
	t.Helper()
	svc, edge := "", ""
	if withDB {
		svc = "  - {name: db, namespace: rollout, ports: [{port: 5432, protocol: TCP}]}"
		edge = "  - {from: www, to: db, ports: [5432]}"
	}
	p := filepath.Join(t.TempDir(), "graph.yaml")
	if err := os.WriteFile(p, fmt.Appendf(nil, rolloutGraph, svc, edge), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCode runs the built meshwaf against the API server and returns its
// stdout and exit code; any failure to run is fatal.
func runCode(t *testing.T, args ...string) ([]byte, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append(slices.Clone(args), "--kubeconfig", env.cluster.kubeconfig)
	out, stderr, err := run(ctx, env.repo, env.meshwaf, args...)
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("meshwaf %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
	return out, code
}

// mustCode is runCode that fails unless the exit code is want.
func mustCode(t *testing.T, want int, args ...string) []byte {
	t.Helper()
	out, code := runCode(t, args...)
	if code != want {
		t.Fatalf("meshwaf %s: exit code %d, want %d", strings.Join(args, " "), code, want)
	}
	return out
}

type change struct{ Action, Namespace, Name string }

func applyChanges(t *testing.T, args ...string) map[string]string {
	t.Helper()
	out := mustCode(t, 0, append([]string{"policy", "apply", "-o", "json"}, args...)...)
	var cs []change
	if err := json.Unmarshal(out, &cs); err != nil {
		t.Fatalf("policy apply -o json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, c := range cs {
		m[c.Namespace+"/"+c.Name] = c.Action
	}
	return m
}

// livePolicies are the AuthorizationPolicies of the rollout namespace by
// name.
func livePolicies(t *testing.T, ctx context.Context) map[string]*unstructured.Unstructured {
	t.Helper()
	l, err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		m[l.Items[i].GetName()] = &l.Items[i]
	}
	return m
}

type diffReport struct {
	Drift   bool     `json:"drift"`
	Missing []string `json:"missing"`
	Extra   []string `json:"extra"`
	Absent  []string `json:"absent"`
	Edited  []string `json:"edited"`
	Stale   []string `json:"stale"`
	DryRun  []string `json:"dryRun"`
	Foreign []struct {
		Policy string `json:"policy"`
	} `json:"foreign"`
}

func policyDiff(t *testing.T, want int, graph string, args ...string) diffReport {
	t.Helper()
	out := mustCode(t, want, append([]string{"policy", "diff", "-o", "json", "-f", graph}, args...)...)
	var r diffReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("policy diff -o json: %v\n%s", err, out)
	}
	if r.Drift != (want == rolloutDrift) {
		t.Errorf("drift %v with exit code %d", r.Drift, want)
	}
	return r
}

// fakePrometheus answers Prometheus's instant-query API from a table: the
// first entry whose key the query contains gives the vector (value by
// label set); other queries get an empty vector. It stands in for the
// real Prometheus of promote_prometheus_test.go, so these tests check what
// promote does in the cluster.
type fakePrometheus struct {
	mu      sync.Mutex
	answers []fakeAnswer
	queries []string
}

type fakeAnswer struct {
	contains string
	series   []fakeSeries
}

type fakeSeries struct {
	labels map[string]string
	value  float64
}

func (f *fakePrometheus) set(a ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers, f.queries = a, nil
}

func (f *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.queries = append(f.queries, q)
	var series []fakeSeries
	for _, a := range f.answers {
		if strings.Contains(q, a.contains) {
			series = a.series
			break
		}
	}
	f.mu.Unlock()
	result := []map[string]any{}
	for _, s := range series {
		result = append(result, map[string]any{"metric": s.labels, "value": []any{float64(time.Now().Unix()), fmt.Sprint(s.value)}})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}})
}

// TestPolicyRollout runs apply, diff and promote against the API server:
// server dry run, staged apply, idempotent re-apply, promotion refused and
// done, a hand edit detected and taken back, a foreign policy, pruning.
func TestPolicyRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := env.cluster.ensureNamespace(ctx, rolloutNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
		if err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	graph := writeRolloutGraph(t, true)
	all := []string{"rollout/meshwaf-allow-auth", "rollout/meshwaf-allow-db", "rollout/allow-nothing"}

	// Server dry run: everything would be created, nothing is stored.
	got := applyChanges(t, "-f", graph, "--dry-run=server")
	for _, k := range all {
		if got[k] != "created" {
			t.Errorf("dry run: %s: %q, want created", k, got[k])
		}
	}
	if live := livePolicies(t, ctx); len(live) != 0 {
		t.Fatalf("server dry run stored %d policies", len(live))
	}

	// Staged: labelled, annotated dry-run, owned by field manager meshwaf.
	applyChanges(t, "-f", graph, "--stage", "dry-run")
	live := livePolicies(t, ctx)
	if len(live) != len(all) {
		t.Fatalf("%d policies stored, want %d", len(live), len(all))
	}
	stagedAt := map[string]string{}
	for name, u := range live {
		l, a := u.GetLabels(), u.GetAnnotations()
		if l["app.kubernetes.io/managed-by"] != "meshwaf" || l["meshwaf.io/graph"] != "rollout-test" {
			t.Errorf("%s: labels %v", name, l)
		}
		if a["istio.io/dry-run"] != "true" || a["meshwaf.io/staged-at"] == "" {
			t.Errorf("%s: annotations %v", name, a)
		}
		stagedAt[name] = a["meshwaf.io/staged-at"]
		if !slices.ContainsFunc(u.GetManagedFields(), func(m metav1.ManagedFieldsEntry) bool {
			return m.Manager == "meshwaf" && m.Operation == metav1.ManagedFieldsOperationApply
		}) {
			t.Errorf("%s: no server-side apply by field manager meshwaf: %v", name, u.GetManagedFields())
		}
	}

	// In dry-run nothing is enforced: drift, unless evaluated as enforced.
	r := policyDiff(t, rolloutDrift, graph)
	if len(r.DryRun) != len(all) || len(r.Extra) == 0 || len(r.Edited) != 0 {
		t.Errorf("staged: %+v", r)
	}
	policyDiff(t, 0, graph, "--as-enforced")

	// Re-applying changes nothing, not even when the wait started.
	got = applyChanges(t, "-f", graph, "--stage", "dry-run")
	for _, k := range all {
		if got[k] != "unchanged" {
			t.Errorf("re-apply: %s: %q, want unchanged", k, got[k])
		}
	}
	for name, u := range livePolicies(t, ctx) {
		if at := u.GetAnnotations()["meshwaf.io/staged-at"]; at != stagedAt[name] {
			t.Errorf("%s: staged-at moved from %s to %s", name, stagedAt[name], at)
		}
	}

	prom := &fakePrometheus{}
	srv := httptest.NewServer(prom)
	defer srv.Close()
	counters := fakeAnswer{"count(count_over_time", []fakeSeries{{map[string]string{}, 6}}}
	promote := func(want int, stableFor string) string {
		t.Helper()
		out := mustCode(t, want, "policy", "promote", "-f", graph, "--prometheus", srv.URL, "--stable-for", stableFor)
		return string(out)
	}
	stillStaged := func() {
		t.Helper()
		for name, u := range livePolicies(t, ctx) {
			if u.GetAnnotations()["istio.io/dry-run"] != "true" {
				t.Errorf("%s: promoted despite the refusal", name)
			}
		}
	}

	// Refused: staged for less than --stable-for.
	prom.set(counters)
	if out := promote(rolloutDrift, "1h"); !strings.Contains(out, "in dry-run for less than 1h0m0s") {
		t.Errorf("promote: %s", out)
	}
	stillStaged()

	// Refused: shadow denials, with the flows that would have been denied.
	time.Sleep(1100 * time.Millisecond) // staged-at has second precision
	prom.set(counters,
		fakeAnswer{`authz_dry_run_result="denied"`, []fakeSeries{{map[string]string{"namespace": rolloutNS, "pod": "db-7d9f"}, 4}}},
		fakeAnswer{"istio_tcp_connections_opened_total", []fakeSeries{{map[string]string{
			"source_principal": "spiffe://cluster.local/ns/rollout/sa/auth", "destination_principal": "spiffe://cluster.local/ns/rollout/sa/db",
			"destination_workload": "db", "destination_workload_namespace": rolloutNS}, 4}}})
	out := promote(rolloutDrift, "1s")
	for _, want := range []string{"rollout/db-7d9f: 4", "cluster.local/ns/rollout/sa/auth -> rollout/db (4, istio_tcp_connections_opened_total)", "4 shadow denials"} {
		if !strings.Contains(out, want) {
			t.Errorf("promote output lacks %q", want)
		}
	}
	stillStaged()

	// Done: shadow counters present, zero denials.
	prom.set(counters)
	out = promote(0, "1s")
	if !strings.Contains(out, "authorizationpolicy rollout/allow-nothing promoted") {
		t.Errorf("promote: %s", out)
	}
	if !strings.Contains(strings.Join(prom.queries, "\n"), `namespace=~"rollout"`) {
		t.Errorf("queries not limited to the staged namespace: %q", prom.queries)
	}
	for name, u := range livePolicies(t, ctx) {
		if _, ok := u.GetAnnotations()["istio.io/dry-run"]; ok {
			t.Errorf("%s: still dry-run after promotion", name)
		}
	}
	policyDiff(t, 0, graph)
	// Applying enforced now changes nothing.
	got = applyChanges(t, "-f", graph, "--stage", "enforce")
	for _, k := range all {
		if got[k] != "unchanged" {
			t.Errorf("apply after promote: %s: %q, want unchanged", k, got[k])
		}
	}

	// A hand edit: auth admits db's identity instead of www's.
	auth := livePolicies(t, ctx)["meshwaf-allow-auth"]
	rules, _, _ := unstructured.NestedSlice(auth.Object, "spec", "rules")
	rules[0].(map[string]any)["from"] = []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/rollout/sa/db"}}}}
	if err := unstructured.SetNestedSlice(auth.Object, rules, "spec", "rules"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).Update(ctx, auth, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	r = policyDiff(t, rolloutDrift, graph)
	if !slices.Equal(r.Edited, []string{"rollout/meshwaf-allow-auth"}) ||
		!slices.Equal(r.Missing, []string{"rollout/www -> rollout/auth:8080"}) ||
		!slices.Equal(r.Extra, []string{"rollout/db -> rollout/auth:8080"}) {
		t.Errorf("hand edit: %+v", r)
	}
	// Apply takes the field back from the other manager (Force on owned objects).
	if got := applyChanges(t, "-f", graph, "--stage", "enforce"); got["rollout/meshwaf-allow-auth"] != "configured" {
		t.Errorf("apply over the hand edit: %v", got)
	}
	policyDiff(t, 0, graph)

	// A policy meshwaf does not own that opens db to everyone.
	add(t, ctx, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: open-db, namespace: rollout}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{}]
`)
	r = policyDiff(t, rolloutDrift, graph)
	if len(r.Foreign) != 1 || r.Foreign[0].Policy != "rollout/open-db" || len(r.Extra) == 0 {
		t.Errorf("foreign policy: %+v", r)
	}
	if err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).Delete(ctx, "meshwaf-allow-db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r = policyDiff(t, rolloutDrift, graph)
	if !slices.Equal(r.Absent, []string{"rollout/meshwaf-allow-db"}) {
		t.Errorf("absent: %+v", r)
	}
	if got := applyChanges(t, "-f", graph, "--stage", "enforce"); got["rollout/meshwaf-allow-db"] != "created" {
		t.Errorf("apply after a deletion: %v", got)
	}

	// Pruning: db leaves the graph. Another graph's object and an object
	// without the labels stay; a server dry run prunes nothing.
	add(t, ctx, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: other-graph
  namespace: rollout
  labels: {app.kubernetes.io/managed-by: meshwaf, meshwaf.io/graph: other}
spec: {selector: {matchLabels: {app: nobody}}}
`)
	smaller := writeRolloutGraph(t, false)
	got = applyChanges(t, "-f", smaller, "--stage", "enforce", "--dry-run=server")
	if got["rollout/meshwaf-allow-db"] != "pruned" {
		t.Errorf("dry-run prune: %v", got)
	}
	if _, ok := livePolicies(t, ctx)["meshwaf-allow-db"]; !ok {
		t.Fatal("a server dry run deleted meshwaf-allow-db")
	}
	r = policyDiff(t, rolloutDrift, smaller)
	if !slices.Equal(r.Stale, []string{"rollout/meshwaf-allow-db"}) {
		t.Errorf("stale: %+v", r)
	}
	got = applyChanges(t, "-f", smaller, "--stage", "enforce")
	if got["rollout/meshwaf-allow-db"] != "pruned" || len(got) != 3 {
		t.Errorf("prune: %v", got)
	}
	live = livePolicies(t, ctx)
	for _, name := range []string{"other-graph", "open-db", "meshwaf-allow-auth", "allow-nothing"} {
		if _, ok := live[name]; !ok {
			t.Errorf("%s: pruned, but meshwaf's graph does not own it", name)
		}
	}
	if _, ok := live["meshwaf-allow-db"]; ok {
		t.Error("meshwaf-allow-db: not pruned")
	}
	_, err := env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).Get(ctx, "meshwaf-allow-db", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("meshwaf-allow-db: %v", err)
	}
}

// An object meshwaf does not own under a name the graph generates is not
// taken over: without Force, server-side apply reports the conflict.
func TestPolicyApplyConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.cluster.ensureNamespace(ctx, rolloutNS); err != nil {
		t.Fatal(err)
	}
	graph := writeRolloutGraph(t, false)
	add(t, ctx, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: meshwaf-allow-auth, namespace: rollout}
spec:
  selector: {matchLabels: {app: auth}}
  rules: [{from: [{source: {principals: [cluster.local/ns/rollout/sa/someone]}}]}]
`)
	t.Cleanup(func() {
		_ = env.cluster.dyn.Resource(apGVR).Namespace(rolloutNS).Delete(context.Background(), "allow-nothing", metav1.DeleteOptions{})
	})
	out, code := runCode(t, "policy", "apply", "-f", graph, "--stage", "enforce")
	if code != 1 {
		t.Fatalf("exit code %d, want 1 (conflict)\n%s", code, out)
	}
	u := livePolicies(t, ctx)["meshwaf-allow-auth"]
	if u.GetLabels()["meshwaf.io/graph"] != "" {
		t.Errorf("meshwaf took over an object it does not own: %v", u.GetLabels())
	}
	if _, ok := livePolicies(t, ctx)["allow-nothing"]; ok {
		t.Error("the default-deny was applied after a failed ALLOW policy: that is the lockout the apply order avoids")
	}
}
