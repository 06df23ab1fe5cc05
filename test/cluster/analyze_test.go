package cluster

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// analysisMessage is one entry of `istioctl analyze -o json`.
type analysisMessage struct {
	Code      string `json:"code"`
	Level     string `json:"level"`
	Origin    string `json:"origin"`
	Message   string `json:"message"`
	Reference string `json:"reference"`
}

// TestIstioctlAnalyzeDemo stores the mesh-mode install and the demo
// (manifests/demo) in the API server, with a pod for each Deployment (no
// controller manager runs to make them), and runs `istioctl analyze` over
// every namespace with the install's MeshConfig. Any message of level Error
// fails; the others are logged.
func TestIstioctlAnalyzeDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.cluster

	install, err := decodeObjects(meshwaf(t, "manifests", "--mode", "mesh"))
	if err != nil {
		t.Fatalf("meshwaf manifests --mode mesh: %v", err)
	}
	demoDir := filepath.Join(env.repo, "manifests", "demo")
	files, err := manifestFiles(demoDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no demo manifests in %s", demoDir)
	}
	objs := append([]*unstructured.Unstructured(nil), install...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		o, err := decodeObjects(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		objs = append(objs, o...)
	}

	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	mesh := meshConfigOf(t, install)
	if err := os.WriteFile(meshFile, mesh, 0o600); err != nil {
		t.Fatal(err)
	}
	// istiod reads its MeshConfig from this ConfigMap; analyze does too.
	if err := c.ensureNamespace(ctx, "istio-system"); err != nil {
		t.Fatal(err)
	}
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "istio", "namespace": "istio-system"},
		"data":     map[string]any{"mesh": string(mesh)},
	}}
	if _, err := c.create(ctx, cm, false); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	stored := accept(t, "analyze set-up", objs, true)
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range podsFor(stored) {
		if err := c.ensureServiceAccount(ctx, p.GetNamespace(), serviceAccountOf(p)); err != nil {
			t.Fatal(err)
		}
		_, err := c.create(ctx, p, false)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("pod for %s: %v", objectName(p), err)
		}
	}

	out, stderr, err := run(ctx, env.repo, env.tools.istioctl, "analyze", "--kubeconfig", c.kubeconfig,
		"--all-namespaces", "--meshConfigFile", meshFile, "--output", "json",
		"--output-threshold", "Info", "--failure-threshold", "Error", "--timeout", "60s")
	var msgs []analysisMessage
	if jerr := json.Unmarshal(out, &msgs); jerr != nil {
		t.Fatalf("istioctl analyze: output is not JSON (%v): %v\n%s\n%s", jerr, err, out, stderr)
	}
	sort.Slice(msgs, func(i, j int) bool {
		return msgs[i].Level+msgs[i].Code+msgs[i].Origin < msgs[j].Level+msgs[j].Code+msgs[j].Origin
	})
	for _, m := range msgs {
		line := m.Level + " " + m.Code + " (" + m.Origin + "): " + m.Message
		if strings.EqualFold(m.Level, "Error") {
			t.Errorf("istioctl analyze: %s", line)
		} else {
			t.Logf("istioctl analyze: %s", line)
		}
	}
	if err != nil && !t.Failed() {
		t.Errorf("istioctl analyze failed without an error message: %v\n%s", err, stderr)
	}
	t.Logf("istioctl analyze: %d messages over %d stored objects", len(msgs), len(stored))
}

// meshConfigOf returns spec.meshConfig of the IstioOperator among objs, as
// MeshConfig YAML.
func meshConfigOf(t *testing.T, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() != "IstioOperator" {
			continue
		}
		mc, ok, err := unstructured.NestedMap(u.Object, "spec", "meshConfig")
		if err != nil || !ok {
			t.Fatalf("%s: no spec.meshConfig (%v)", objectName(u), err)
		}
		data, err := yaml.Marshal(mc)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	t.Fatal("meshwaf manifests --mode mesh: no IstioOperator with the extension provider")
	return nil
}

// podsFor makes one pod from the template of each Deployment in objs.
func podsFor(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var pods []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() != "Deployment" {
			continue
		}
		tmpl, ok, _ := unstructured.NestedMap(u.Object, "spec", "template")
		if !ok {
			continue
		}
		p := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod"}}
		if md, ok := tmpl["metadata"].(map[string]any); ok {
			p.Object["metadata"] = md
		}
		p.Object["spec"] = tmpl["spec"]
		p.SetName(u.GetName() + "-0")
		p.SetNamespace(u.GetNamespace())
		if p.GetNamespace() == "" {
			p.SetNamespace("default")
		}
		pods = append(pods, p)
	}
	return pods
}

func serviceAccountOf(pod *unstructured.Unstructured) string {
	if sa, ok, _ := unstructured.NestedString(pod.Object, "spec", "serviceAccountName"); ok && sa != "" {
		return sa
	}
	return "default"
}

// ensureServiceAccount creates a service account unless it exists: no
// controller manager runs to make each namespace's "default".
func (c *cluster) ensureServiceAccount(ctx context.Context, ns, name string) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ServiceAccount")
	u.SetName(name)
	u.SetNamespace(ns)
	if err := c.ensureNamespace(ctx, ns); err != nil {
		return err
	}
	_, err := c.create(ctx, u, false)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
