package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"istio.io/api/annotation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// notServed are API groups whose objects are not for the API server:
// meshwaf's own ServiceGraph, the IstioOperator overlay for
// `istioctl install -f` (checked by istioctl instead), kustomize's files.
var notServed = []string{"meshwaf.io", "install.istio.io", "kustomize.config.k8s.io"}

func served(u *unstructured.Unstructured) bool {
	return !slices.Contains(notServed, u.GroupVersionKind().Group)
}

// accept checks that the API server accepts every object of one rendered
// output. Namespaces (named by a Namespace object or by an object's
// metadata.namespace) are created for real first; every other object gets a
// server-side create, a dry run unless stored is set, with strict field
// validation. Every rejection is reported, not only the first. It returns
// the objects the server was asked to take.
func accept(t *testing.T, source string, objs []*unstructured.Unstructured, stored bool) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.cluster

	var todo []*unstructured.Unstructured
	for _, u := range objs {
		switch {
		case !served(u):
			t.Logf("%s: %s: not an API server object, left to istioctl", source, objectName(u))
		case u.GetKind() == "Namespace" && u.GetAPIVersion() == "v1":
			warns, err := c.create(ctx, u, false)
			if apierrors.IsAlreadyExists(err) {
				// Created by an earlier output: check this one still validates.
				warns, err = c.create(ctx, withName(u, u.GetName()+"-dry-run-check"), true)
			}
			report(t, source, u, warns, err)
		default:
			if ns := u.GetNamespace(); ns != "" {
				if err := c.ensureNamespace(ctx, ns); err != nil {
					t.Fatalf("%s: namespace %s: %v", source, ns, err)
				}
			}
			todo = append(todo, u)
		}
	}
	for _, u := range todo {
		warns, err := c.create(ctx, u, !stored)
		if apierrors.IsAlreadyExists(err) {
			if stored {
				t.Logf("%s: %s: already stored by an earlier output", source, objectName(u))
				continue
			}
			// Another test stored an object of this name: validate a
			// renamed copy, which differs only in the name.
			warns, err = c.create(ctx, withName(u, u.GetName()+"-2"), true)
		}
		report(t, source, u, warns, err)
	}
	return todo
}

func withName(u *unstructured.Unstructured, name string) *unstructured.Unstructured {
	c := u.DeepCopy()
	c.SetName(name)
	return c
}

func report(t *testing.T, source string, u *unstructured.Unstructured, warns []string, err error) {
	t.Helper()
	for _, w := range warns {
		t.Logf("%s: %s: API server warning: %s", source, objectName(u), w)
	}
	if err != nil {
		t.Errorf("%s: %s rejected: %v", source, objectName(u), err)
	}
}

// istioctlValidate runs `istioctl validate` (Istio's own validation of its
// kinds, including IstioOperator) over one rendered output.
func istioctlValidate(t *testing.T, source string, data []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := run(ctx, env.repo, env.tools.istioctl, "validate", "--kubeconfig", env.cluster.kubeconfig, "-f", f)
	if err != nil {
		t.Errorf("%s: istioctl validate: %v\nstdout:\n%s", source, err, out)
		return
	}
	if msg := strings.TrimSpace(string(out) + string(stderr)); msg != "" {
		t.Logf("%s: istioctl validate:\n%s", source, msg)
	}
}

// The graph the segmentation issue ships as its example.
const shopGraph = "examples/shop-graph.yaml"

func TestPolicyGenerateAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		kinds []string // kinds the output must consist of
	}{
		{"istio", nil, []string{"AuthorizationPolicy"}},
		{"istio-dry-run", []string{"--dry-run"}, []string{"AuthorizationPolicy"}},
		{"networkpolicy", []string{"--format", "networkpolicy"}, []string{"NetworkPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"policy", "generate", "-f", shopGraph}, tc.args...)
			data := meshwaf(t, args...)
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("meshwaf %s: output is not YAML objects: %v", strings.Join(args, " "), err)
			}
			if len(objs) == 0 {
				t.Fatalf("meshwaf %s: no objects", strings.Join(args, " "))
			}
			for _, u := range objs {
				if !slices.Contains(tc.kinds, u.GetKind()) {
					t.Errorf("%s: unexpected kind in a %s output", objectName(u), tc.name)
				}
				if u.GetLabels()["app.kubernetes.io/managed-by"] != "meshwaf" {
					t.Errorf("%s: no app.kubernetes.io/managed-by: meshwaf label", objectName(u))
				}
				if slices.Contains(tc.args, "--dry-run") && u.GetKind() == "AuthorizationPolicy" &&
					u.GetAnnotations()[annotation.IoIstioDryRun.Name] != "true" {
					t.Errorf("%s: --dry-run output without %s: \"true\"", objectName(u), annotation.IoIstioDryRun.Name)
				}
			}
			accept(t, "policy generate "+tc.name, objs, false)
			if !strings.HasPrefix(tc.name, "networkpolicy") {
				istioctlValidate(t, "policy generate "+tc.name, data)
			}
		})
	}
}

// NetworkPolicies have no dry-run mode: the CLI refuses the combination
// as a usage error (exit code 2) rather than emit objects that would be
// enforced at once.
func TestPolicyGenerateNetworkPolicyDryRunRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := run(ctx, env.repo, env.meshwaf, "policy", "generate", "-f", shopGraph, "--format", "networkpolicy", "--dry-run")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v\nstdout:\n%s", err, out)
	}
	if len(out) > 0 {
		t.Errorf("objects written despite the refusal:\n%s", out)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(stderr)))
}

// TestStrictValidation checks the harness itself: an object with a field
// the schema does not know is rejected, so "accepted" above means the
// server read every field.
func TestStrictValidation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs, err := decodeObjects([]byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: strict-check, namespace: default}
spec:
  action: ALLOW
  rules: [{from: [{source: {principal: [cluster.local/ns/default/sa/www]}}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.cluster.ensureNamespace(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	_, err = env.cluster.create(ctx, objs[0], true)
	if err == nil || !strings.Contains(err.Error(), "principal") {
		t.Fatalf("a misspelt field (principal for principals) was not rejected: %v", err)
	}
	t.Logf("rejected as it should be: %v", err)
}

var modes = []string{"mesh", "envoyfilter", "pod", "waypoint"}

// TestManifestsAccepted checks every part of every install mode:
// the objects, the per-route profile EnvoyFilter (not in the waypoint mode:
// EnvoyFilter is unsupported on waypoints) and, for the pod mode, the
// ConfigMap; for the waypoint mode also the policies that target Services
// and those for several namespaces. The IstioOperator overlay and the pod
// patch have tests of their own below.
func TestManifestsAccepted(t *testing.T) {
	type variant struct {
		name, part string
		args       []string
	}
	for _, mode := range modes {
		variants := []variant{{"objects", "objects", nil}, {"profile-route", "profile-route", nil}}
		if mode == "waypoint" {
			variants = []variant{
				{"objects", "objects", nil},
				{"services", "objects", []string{"--waypoint-service", "shop/cart", "--waypoint-service", "shop/api"}},
				{"namespaces", "objects", []string{"--waypoint-namespace", "shop", "--waypoint-namespace", "billing",
					"--waypoint-service", "payments/ledger", "--waypoint-name", "edge"}},
			}
		}
		for _, v := range variants {
			args := append([]string{"manifests", "--mode", mode, "--part", v.part}, v.args...)
			name := strings.Join(args, " ")
			t.Run(mode+"/"+v.name, func(t *testing.T) {
				data := meshwaf(t, args...)
				objs, err := decodeObjects(data)
				if err != nil {
					t.Fatalf("meshwaf %s: output is not YAML objects: %v", name, err)
				}
				if len(objs) == 0 {
					t.Fatalf("meshwaf %s: no objects", name)
				}
				accept(t, name, objs, false)
				istioctlValidate(t, name, data)
				t.Logf("%s: %d objects accepted", name, len(objs))
			})
		}
	}
}

// TestIstioOperatorOverlay checks the mesh mode's IstioOperator overlay
// with the istioctl that `istioctl install -f` would be: validate, and
// render the install with it, whose mesh config must then carry meshwaf's
// extension provider.
func TestIstioOperatorOverlay(t *testing.T) {
	data := meshwaf(t, "manifests", "--mode", "mesh", "--part", "istio-operator")
	istioctlValidate(t, "istio-operator", data)
	f := filepath.Join(t.TempDir(), "overlay.yaml")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs := manifestGenerate(t, ctx, f)
	for _, u := range objs {
		if u.GetKind() != "ConfigMap" || u.GetName() != "istio" {
			continue
		}
		mesh, _, _ := unstructured.NestedString(u.Object, "data", "mesh")
		var mc struct {
			ExtensionProviders []struct {
				Name              string         `json:"name"`
				EnvoyExtAuthzGrpc map[string]any `json:"envoyExtAuthzGrpc"`
			} `json:"extensionProviders"`
		}
		if err := yaml.Unmarshal([]byte(mesh), &mc); err != nil {
			t.Fatalf("ConfigMap istio: mesh: %v", err)
		}
		for _, p := range mc.ExtensionProviders {
			if p.Name == "meshwaf" && p.EnvoyExtAuthzGrpc["service"] == "meshwaf.meshwaf-system.svc.cluster.local" {
				t.Logf("rendered install's mesh config has provider meshwaf: %v", p.EnvoyExtAuthzGrpc)
				return
			}
		}
		t.Fatalf("the rendered install's mesh config has no meshwaf provider:\n%s", mesh)
	}
	t.Fatalf("istioctl manifest generate rendered no ConfigMap istio (%d objects)", len(objs))
}

// manifestGenerate renders the Istio install for an IstioOperator file,
// as `istioctl install -f` would before applying it.
func manifestGenerate(t *testing.T, ctx context.Context, file string) []*unstructured.Unstructured {
	t.Helper()
	out, stderr, err := run(ctx, env.repo, env.tools.istioctl, "manifest", "generate", "-f", file)
	if err != nil {
		t.Fatalf("istioctl manifest generate -f %s: %v", file, err)
	}
	if len(stderr) > 0 {
		t.Logf("istioctl manifest generate: %s", stderr)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("istioctl manifest generate: %v", err)
	}
	return objs
}

// TestPodPatchAccepted stores a Deployment carrying an application
// container, then sends the pod mode's patch as a strategic merge patch in
// a dry run, the way kustomize or kubectl patch would apply it; the
// ConfigMap beside it gets a dry-run create.
func TestPodPatchAccepted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := meshwaf(t, "manifests", "--mode", "pod", "--part", "pod-patch")
	objs, err := decodeObjects(data)
	if err != nil {
		t.Fatal(err)
	}
	var patches, rest []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "Deployment" {
			patches = append(patches, u)
		} else {
			rest = append(rest, u)
		}
	}
	if len(patches) != 1 {
		t.Fatalf("want one Deployment patch, got %d", len(patches))
	}
	accept(t, "pod-patch", rest, false)
	istioctlValidate(t, "pod-patch", data)

	patch := patches[0]
	ns := patch.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	app, err := decodeObjects(fmt.Appendf(nil, `apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: app, image: shop:v1, ports: [{containerPort: 8080}]}]
`, patch.GetName(), ns))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.cluster.ensureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cluster.create(ctx, app[0], false); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	body, err := patch.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	ri, err := env.cluster.resource(app[0])
	if err != nil {
		t.Fatal(err)
	}
	pctx, w := withWarnings(ctx)
	got, err := ri.Patch(pctx, patch.GetName(), types.StrategicMergePatchType, body, metav1.PatchOptions{
		DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict", FieldManager: "meshwaf-test",
	})
	report(t, "pod-patch", patch, w.get(), err)
	if err != nil {
		return
	}
	containers, _, _ := unstructured.NestedSlice(got.Object, "spec", "template", "spec", "containers")
	var names []string
	for _, c := range containers {
		names = append(names, fmt.Sprint(c.(map[string]any)["name"]))
	}
	if !slices.Contains(names, "app") || len(names) < 2 {
		t.Errorf("patched Deployment has containers %v: want the app's and meshwaf's", names)
	}
	t.Logf("patched Deployment: containers %v, labels %v", names, got.GetLabels())
}

// TestManifestsDirAccepted checks every object file under manifests/:
// every YAML file but kustomization.yaml and the patches a kustomization
// names (partial objects, built by the kustomize test; the pod patch is
// checked above).
func TestManifestsDirAccepted(t *testing.T) {
	root := filepath.Join(env.repo, "manifests")
	files, err := objectFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML files under %s", root)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(env.repo, f)
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			accept(t, rel, objs, false)
			istioctlValidate(t, rel, data)
		})
	}
}

// kustomization is the part of a kustomization.yaml the tests read.
type kustomization struct {
	Resources []string `json:"resources"`
	Patches   []struct {
		Path string `json:"path"`
	} `json:"patches"`
	PatchesStrategicMerge []string `json:"patchesStrategicMerge"`
}

func readKustomization(dir string) (*kustomization, error) {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	k := &kustomization{}
	return k, yaml.Unmarshal(data, k)
}

// objectFiles lists the YAML files under root that hold whole objects.
func objectFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if _, err := os.Stat(filepath.Join(p, "Chart.yaml")); err == nil {
			return filepath.SkipDir // a Helm chart: templates, not objects (test/helm renders it)
		}
		skip := map[string]bool{"kustomization.yaml": true}
		k, err := readKustomization(p)
		switch {
		case err == nil:
			for _, patch := range k.Patches {
				skip[filepath.Clean(patch.Path)] = true
			}
			for _, patch := range k.PatchesStrategicMerge {
				skip[filepath.Clean(patch)] = true
			}
		case !os.IsNotExist(err):
			return fmt.Errorf("%s: %w", p, err)
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.IsDir() && isYAML(e.Name()) && !skip[e.Name()] {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil, nil
	}
	return files, err
}

// kustomizeResources lists the files `kubectl apply -k dir` takes as whole
// objects: the file resources of dir's kustomization, following directory
// resources into their kustomizations.
func kustomizeResources(dir string) ([]string, error) {
	k, err := readKustomization(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", dir, r, err)
		}
		if st.IsDir() {
			sub, err := kustomizeResources(p)
			if err != nil {
				return nil, err
			}
			files = append(files, sub...)
		} else {
			files = append(files, p)
		}
	}
	return files, nil
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// TestWaypointPolicyRulesEnforced checks that "accepted" above means the
// API server evaluated the rules of the targetRefs a waypoint policy
// relies on: the rendered policy with a selector added, or with a
// targetRef into another namespace, is rejected.
func TestWaypointPolicyRulesEnforced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs, err := decodeObjects(meshwaf(t, "manifests", "--mode", "waypoint"))
	if err != nil {
		t.Fatal(err)
	}
	var policy *unstructured.Unstructured
	for _, u := range objs {
		if _, ok, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs"); ok && u.GetKind() == "AuthorizationPolicy" {
			policy = u
		}
	}
	if policy == nil {
		t.Fatal("manifests --mode waypoint: no AuthorizationPolicy with targetRefs")
	}
	if err := env.cluster.ensureNamespace(ctx, policy.GetNamespace()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(u *unstructured.Unstructured) error
		want string
	}{
		{"selector beside targetRefs", func(u *unstructured.Unstructured) error {
			return unstructured.SetNestedStringMap(u.Object, map[string]string{"meshwaf.io/inspect": "enabled"}, "spec", "selector", "matchLabels")
		}, "only one of targetRefs or selector can be set"},
		{"cross-namespace targetRef", func(u *unstructured.Unstructured) error {
			refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs")
			refs[0].(map[string]any)["namespace"] = "other"
			return unstructured.SetNestedSlice(u.Object, refs, "spec", "targetRefs")
		}, "cross namespace referencing is not currently supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := withName(policy, policy.GetName()+"-rule-check")
			if err := tc.edit(u); err != nil {
				t.Fatal(err)
			}
			_, err := env.cluster.create(ctx, u, true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a rejection containing %q, got %v", tc.want, err)
			}
			t.Logf("rejected as it should be: %v", err)
		})
	}
}

// TestHelmChartAccepted checks every object the Helm chart renders, for
// every mode and the non-default values of test/helm: test/helm keeps each
// rendering in test/helm/testdata and fails when the chart renders
// anything else, so this module needs no Helm.
func TestHelmChartAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(env.repo, "test", "helm", "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < len(modes) {
		t.Fatalf("test/helm/testdata has %d renderings: want at least one per mode (%d)", len(files), len(modes))
	}
	for _, f := range files {
		rel, _ := filepath.Rel(env.repo, f)
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeObjects(data)
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			if len(objs) == 0 {
				t.Fatalf("%s: no objects", rel)
			}
			accept(t, rel, objs, false)
			istioctlValidate(t, rel, data)
			t.Logf("%s: %d objects accepted", rel, len(objs))
		})
	}
}
