package cluster

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// egressGraph is the seed shop in a namespace of its own, so the analysis
// sees only its objects.
const egressGraph = `apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: egress-shop}
spec:
  services:
  - {name: www,  namespace: egress-demo, ports: [{port: 8080, protocol: HTTP}], ingress: true, inspect: true}
  - {name: auth, namespace: egress-demo, ports: [{port: 8080, protocol: HTTP}]}
  - {name: db,   namespace: egress-demo, ports: [{port: 8080, protocol: HTTP}]}
  edges:
  - {from: www, to: auth, ports: [8080]}
  - {from: www, to: db,   ports: [8080]}
`

// TestPolicyGenerateEgressAccepted: the API server takes (strict field
// validation, dry run) every object `policy generate --egress` renders in
// both formats, and istioctl validate the Istio ones.
func TestPolicyGenerateEgressAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		kinds []string
	}{
		{"istio", nil, []string{"AuthorizationPolicy", "Sidecar"}},
		{"networkpolicy", []string{"--format", "networkpolicy"}, []string{"NetworkPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := meshwaf(t, append([]string{"policy", "generate", "-f", shopGraph, "--egress"}, tc.args...)...)
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, u := range objs {
				if !slices.Contains(kinds, u.GetKind()) {
					kinds = append(kinds, u.GetKind())
				}
			}
			if !slices.Equal(kinds, tc.kinds) {
				t.Fatalf("kinds %v, want %v", kinds, tc.kinds)
			}
			accept(t, "policy generate --egress "+tc.name, objs, false)
			if tc.name == "istio" {
				istioctlValidate(t, "policy generate --egress", data)
			}
		})
	}
}

// TestIstioctlAnalyzeEgress stores the Sidecars and policies of a graph
// with its Services and (sidecar-injected) pods, then runs istioctl
// analyze on the namespace: no Error or Warning. A second Sidecar selecting
// the same pods must then be reported (IST0110), so a clean run means
// something.
func TestIstioctlAnalyzeEgress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.cluster
	const ns = "egress-demo"
	graphFile := filepath.Join(t.TempDir(), "graph.yaml")
	if err := os.WriteFile(graphFile, []byte(egressGraph), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(meshwaf(t, "policy", "generate", "-f", graphFile, "--egress"))
	if err != nil {
		t.Fatal(err)
	}
	var sidecar *unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "Sidecar" && u.GetName() == "meshwaf-egress-www" {
			sidecar = u
		}
	}
	if sidecar == nil {
		t.Fatal("no Sidecar meshwaf-egress-www")
	}
	for _, name := range []string{"www", "auth", "db"} {
		objs = append(objs, serviceObject(ns, name, 8080))
		if err := c.ensureServiceAccount(ctx, ns, name); err != nil {
			t.Fatal(err)
		}
		pod := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{
				"name": name + "-0", "namespace": ns, "labels": map[string]any{"app": name},
				"annotations": map[string]any{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`},
			},
			"spec": map[string]any{
				"serviceAccountName": name,
				"containers": []any{
					map[string]any{"name": "app", "image": "app", "ports": []any{map[string]any{"containerPort": int64(8080)}}},
					map[string]any{"name": "istio-proxy", "image": "proxyv2", "args": []any{"proxy", "sidecar"}},
				},
			},
		}}
		if _, err := c.create(ctx, pod, false); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("pod %s: %v", name, err)
		}
	}
	accept(t, "policy generate --egress (stored)", objs, true)
	if t.Failed() {
		t.FailNow()
	}

	msgs := analyzeNamespace(t, ctx, ns)
	for _, m := range msgs {
		line := m.Level + " " + m.Code + " (" + m.Origin + "): " + m.Message
		if strings.EqualFold(m.Level, "Error") || strings.EqualFold(m.Level, "Warning") {
			t.Errorf("istioctl analyze: %s", line)
		} else {
			t.Logf("istioctl analyze: %s", line)
		}
	}

	dup := sidecar.DeepCopy()
	dup.SetName("hand-written-www")
	accept(t, "a second Sidecar for www", []*unstructured.Unstructured{dup}, true)
	ri, err := c.resource(dup)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ri.Delete(context.Background(), dup.GetName(), metav1.DeleteOptions{}) }()
	found := false
	for _, m := range analyzeNamespace(t, ctx, ns) {
		found = found || (m.Code == "IST0110" && strings.EqualFold(m.Level, "Error"))
		t.Logf("with a second Sidecar: %s %s (%s): %s", m.Level, m.Code, m.Origin, m.Message)
	}
	if !found {
		t.Error("istioctl analyze did not report two Sidecars selecting www (IST0110): the clean run above proves nothing")
	}
}

func analyzeNamespace(t *testing.T, ctx context.Context, ns string) []analysisMessage {
	t.Helper()
	out, stderr, err := run(ctx, env.repo, env.tools.istioctl, "analyze", "--kubeconfig", env.cluster.kubeconfig,
		"--namespace", ns, "--output", "json", "--output-threshold", "Info", "--failure-threshold", "Error", "--timeout", "60s")
	var msgs []analysisMessage
	if jerr := json.Unmarshal(out, &msgs); jerr != nil {
		t.Fatalf("istioctl analyze: output is not JSON (%v): %v\n%s\n%s", jerr, err, out, stderr)
	}
	return msgs
}

func serviceObject(ns, name string, port int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"selector": map[string]any{"app": name},
			"ports":    []any{map[string]any{"name": "http", "port": port}},
		},
	}}
}
