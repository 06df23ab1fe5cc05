package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// doctorFinding is one entry of `meshwaf doctor -o json`.
type doctorFinding struct {
	Code     string `json:"code"`
	Severity string `json:"severity"`
	Object   struct {
		Kind      string `json:"kind"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"object"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

func (f doctorFinding) String() string {
	return fmt.Sprintf("%s %s %s %s/%s: %s", f.Severity, f.Code, f.Object.Kind, f.Object.Namespace, f.Object.Name, f.Message)
}

// The doctor's exit codes (cmd/meshwaf).
const (
	doctorOK       = 0
	doctorFindings = 3
)

// runDoctor runs the built `meshwaf doctor -o json` against the API server
// and checks its exit code.
func runDoctor(t *testing.T, wantExit int, args ...string) []doctorFinding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{"doctor", "--kubeconfig", env.cluster.kubeconfig, "-o", "json"}, args...)
	out, _, err := run(ctx, env.repo, env.meshwaf, args...)
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var fs []doctorFinding
	if jerr := json.Unmarshal(out, &fs); jerr != nil {
		t.Fatalf("meshwaf %s: not JSON (%v): %v\n%s", strings.Join(args, " "), jerr, err, out)
	}
	for _, f := range fs {
		t.Logf("doctor: %s", f)
	}
	if code != wantExit {
		t.Fatalf("meshwaf %s: exit code %d, want %d (%v)", strings.Join(args, " "), code, wantExit, err)
	}
	return fs
}

// findingsOf are the findings with code.
func findingsOf(fs []doctorFinding, code string) []doctorFinding {
	var out []doctorFinding
	for _, f := range fs {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

// deploymentsOf are the namespace/name of the Deployments that findings
// with code concern, sorted. Pods that TestIstioctlAnalyzeDemo stored (no
// controller made them, so doctor counts them as workloads of their own)
// are left out, so the answer does not depend on the order of the tests.
func deploymentsOf(fs []doctorFinding, code string) []string {
	var out []string
	for _, f := range findingsOf(fs, code) {
		if f.Object.Kind == "Deployment" {
			out = append(out, f.Object.Namespace+"/"+f.Object.Name)
		}
	}
	slices.Sort(out)
	return out
}

// noErrorsOrWarnings fails on any finding above info.
func noErrorsOrWarnings(t *testing.T, fs []doctorFinding) {
	t.Helper()
	for _, f := range fs {
		if f.Severity != "info" {
			t.Errorf("unexpected finding: %s", f)
		}
	}
}

// installDemo stores what the demo's walk-through installs, as
// TestIstioctlAnalyzeDemo does (objects it already stored are kept): the
// mesh config that `istioctl install -f` writes, and `kubectl apply -k
// manifests/demo`. It returns the stored objects.
func installDemo(t *testing.T, ctx context.Context) []*unstructured.Unstructured {
	t.Helper()
	opFile := filepath.Join(env.repo, "manifests", "overlays", "mesh", "istio-operator.yaml")
	var objs []*unstructured.Unstructured
	for _, u := range manifestGenerate(t, ctx, opFile) {
		if u.GetKind() == "ConfigMap" && u.GetNamespace() == "istio-system" && u.GetName() == "istio" {
			objs = append(objs, u)
		}
	}
	if len(objs) != 1 {
		t.Fatalf("istioctl manifest generate: no ConfigMap istio-system/istio")
	}
	files, err := kustomizeResources(filepath.Join(env.repo, "manifests", "demo"))
	if err != nil {
		t.Fatal(err)
	}
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
	stored := accept(t, "doctor set-up", objs, true)
	if t.Failed() {
		t.FailNow()
	}
	return stored
}

// live reads the stored version of u.
func live(t *testing.T, ctx context.Context, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	ri, err := env.cluster.resource(u)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%s: %v", objectName(u), err)
	}
	return got
}

// replace stores u over the stored object of its name until the test
// ends, then puts the stored one back.
func replace(t *testing.T, ctx context.Context, u *unstructured.Unstructured) {
	t.Helper()
	ri, err := env.cluster.resource(u)
	if err != nil {
		t.Fatal(err)
	}
	before := live(t, ctx, u)
	next := u.DeepCopy()
	next.SetResourceVersion(before.GetResourceVersion())
	if _, err := ri.Update(ctx, next, metav1.UpdateOptions{FieldManager: "meshwaf-test"}); err != nil {
		t.Fatalf("%s: %v", objectName(u), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		restore := before.DeepCopy()
		restore.SetResourceVersion(live(t, ctx, u).GetResourceVersion())
		if _, err := ri.Update(ctx, restore, metav1.UpdateOptions{FieldManager: "meshwaf-test"}); err != nil {
			t.Errorf("restoring %s: %v", objectName(u), err)
		}
	})
}

// remove deletes the stored u until the test ends, then creates it again.
func remove(t *testing.T, ctx context.Context, u *unstructured.Unstructured) {
	t.Helper()
	ri, err := env.cluster.resource(u)
	if err != nil {
		t.Fatal(err)
	}
	before := live(t, ctx, u)
	if err := ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("%s: %v", objectName(u), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		again := before.DeepCopy()
		for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"} {
			unstructured.RemoveNestedField(again.Object, "metadata", f)
		}
		if _, err := ri.Create(ctx, again, metav1.CreateOptions{FieldManager: "meshwaf-test"}); err != nil {
			t.Errorf("restoring %s: %v", objectName(u), err)
		}
	})
}

// add stores u until the test ends.
func add(t *testing.T, ctx context.Context, yamlText string) {
	t.Helper()
	objs, err := decodeObjects([]byte(yamlText))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if _, err := env.cluster.create(ctx, u, false); err != nil {
			t.Fatalf("%s: %v", objectName(u), err)
		}
		ri, err := env.cluster.resource(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ri.Delete(context.Background(), u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("removing %s: %v", objectName(u), err)
			}
		})
	}
}

// setAvailable writes the status a Deployment controller would, through
// the status subresource: every replica available, or none. No controller
// manager runs here, so readiness is whatever the test stores.
func setAvailable(t *testing.T, ctx context.Context, ns, name string, all bool) {
	t.Helper()
	d := &unstructured.Unstructured{}
	d.SetAPIVersion("apps/v1")
	d.SetKind("Deployment")
	d.SetNamespace(ns)
	d.SetName(name)
	ri, err := env.cluster.resource(d)
	if err != nil {
		t.Fatal(err)
	}
	got := live(t, ctx, d)
	replicas, ok, _ := unstructured.NestedInt64(got.Object, "spec", "replicas")
	if !ok {
		replicas = 1
	}
	available := int64(0)
	if all {
		available = replicas
	}
	if err := unstructured.SetNestedMap(got.Object, map[string]any{
		"observedGeneration": got.GetGeneration(),
		"replicas":           replicas, "updatedReplicas": replicas,
		"readyReplicas": available, "availableReplicas": available,
	}, "status"); err != nil {
		t.Fatal(err)
	}
	if _, err := ri.UpdateStatus(ctx, got, metav1.UpdateOptions{FieldManager: "meshwaf-test"}); err != nil {
		t.Fatalf("status of %s: %v", objectName(d), err)
	}
}

// startServe runs the built `meshwaf serve` on loopback ports and returns
// its gRPC address once it accepts connections.
func startServe(t *testing.T) string {
	t.Helper()
	grpcPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	adminPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", grpcPort)
	cmd := exec.Command(env.meshwaf, "serve", "--grpc-address", addr, "--admin-address", fmt.Sprintf("127.0.0.1:%d", adminPort))
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		logf.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := waitFor(ctx, 2*time.Minute, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("meshwaf serve did not listen on %s: %v", addr, err)
	}
	return addr
}

// TestDoctor runs the built `meshwaf doctor` against the API server with
// the demo installed: healthy (meshwaf's Deployment available, its health
// answered by a real `meshwaf serve` on loopback), then broken in each way
// doctor reports, one at a time, each put back afterwards.
func TestDoctor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	stored := installDemo(t, ctx)
	setAvailable(t, ctx, "meshwaf-system", "meshwaf", true)
	var labelled []string
	for _, u := range stored {
		if u.GetKind() != "Deployment" {
			continue
		}
		if l, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "labels"); l["meshwaf.io/inspect"] == "enabled" {
			labelled = append(labelled, u.GetNamespace()+"/"+u.GetName())
		}
	}
	slices.Sort(labelled)
	if len(labelled) == 0 {
		t.Fatal("the demo has no opted-in Deployment")
	}
	object := func(kind, ns, name string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetKind(kind)
		u.SetNamespace(ns)
		u.SetName(name)
		switch kind {
		case "ConfigMap":
			u.SetAPIVersion("v1")
		case "Deployment":
			u.SetAPIVersion("apps/v1")
		case "AuthorizationPolicy":
			u.SetAPIVersion("security.istio.io/v1")
		}
		return u
	}
	// inspected are the Deployments doctor reports under inspection.
	inspected := func(fs []doctorFinding) []string { return deploymentsOf(fs, "MW0030") }

	t.Run("healthy", func(t *testing.T) {
		addr := startServe(t)
		fs := runDoctor(t, doctorOK, "--health-address", addr)
		noErrorsOrWarnings(t, fs)
		if h := findingsOf(fs, "MW0026"); len(h) != 1 || !strings.Contains(h[0].Message, addr) {
			t.Errorf("want MW0026 (SERVING at %s), got %v", addr, h)
		}
		if got := inspected(fs); !slices.Equal(got, labelled) {
			t.Errorf("Deployments under inspection: %v, want the opted-in %v", got, labelled)
		}
		for _, f := range findingsOf(fs, "MW0030") {
			if !strings.Contains(f.Message, "mesh (AuthorizationPolicy istio-system/meshwaf-inspect)") {
				t.Errorf("%s: want the mesh mode's policy named", f)
			}
		}
	})
	t.Run("health unreachable is info", func(t *testing.T) {
		// The Service's cluster DNS name does not resolve here.
		fs := runDoctor(t, doctorOK, "--health-timeout", "2s")
		noErrorsOrWarnings(t, fs)
		if len(findingsOf(fs, "MW0024")) != 1 {
			t.Errorf("want MW0024 (not reachable from here)")
		}
	})
	t.Run("deployment unavailable", func(t *testing.T) {
		setAvailable(t, ctx, "meshwaf-system", "meshwaf", false)
		t.Cleanup(func() { setAvailable(t, context.Background(), "meshwaf-system", "meshwaf", true) })
		fs := runDoctor(t, doctorFindings, "--skip-health")
		if len(findingsOf(fs, "MW0021")) != 1 {
			t.Errorf("want MW0021")
		}
	})
	t.Run("provider missing", func(t *testing.T) {
		cm := live(t, ctx, object("ConfigMap", "istio-system", "istio"))
		mesh, _, _ := unstructured.NestedString(cm.Object, "data", "mesh")
		i := strings.Index(mesh, "extensionProviders:")
		if i < 0 {
			t.Fatalf("the installed mesh config has no extensionProviders:\n%s", mesh)
		}
		// Keep what precedes the list; drop the list (the overlay's only
		// entry is meshwaf's) up to the next top-level key.
		rest := mesh[i:]
		end := len(rest)
		for _, line := range strings.SplitAfter(rest, "\n")[1:] {
			if line != "" && line[0] != ' ' && line[0] != '-' {
				end = strings.Index(rest, line)
				break
			}
		}
		next := cm.DeepCopy()
		if err := unstructured.SetNestedField(next.Object, mesh[:i]+rest[end:], "data", "mesh"); err != nil {
			t.Fatal(err)
		}
		replace(t, ctx, next)
		fs := runDoctor(t, doctorFindings, "--skip-health")
		if len(findingsOf(fs, "MW0002")) != 1 {
			t.Errorf("want MW0002")
		}
		if got := deploymentsOf(fs, "MW0031"); !slices.Equal(got, labelled) {
			t.Errorf("MW0031 for %v, want every opted-in Deployment %v", got, labelled)
		}
	})
	t.Run("labelled workload uncovered", func(t *testing.T) {
		remove(t, ctx, object("AuthorizationPolicy", "istio-system", "meshwaf-inspect"))
		fs := runDoctor(t, doctorFindings, "--skip-health")
		if got := deploymentsOf(fs, "MW0031"); !slices.Equal(got, labelled) {
			t.Errorf("MW0031 for %v, want every opted-in Deployment %v", got, labelled)
		}
		if len(inspected(fs)) != 0 {
			t.Errorf("Deployments still reported under inspection: %v", inspected(fs))
		}
	})
	t.Run("second CUSTOM provider", func(t *testing.T) {
		ns, name, _ := strings.Cut(labelled[0], "/")
		app := live(t, ctx, object("Deployment", ns, name))
		labels, _, _ := unstructured.NestedStringMap(app.Object, "spec", "template", "metadata", "labels")
		add(t, ctx, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: oauth2-doctor-test, namespace: %s}
spec:
  selector: {matchLabels: {app: %q}}
  action: CUSTOM
  provider: {name: oauth2-proxy}
  rules: [{to: [{operation: {paths: [/account/*]}}]}]
`, ns, labels["app"]))
		fs := runDoctor(t, doctorFindings, "--skip-health")
		if got := deploymentsOf(fs, "MW0032"); !slices.Equal(got, labelled[:1]) {
			t.Errorf("MW0032 for %v, want %s only", got, labelled[0])
		}
		for _, f := range findingsOf(fs, "MW0032") {
			if !strings.Contains(f.Message, `"oauth2-proxy" (AuthorizationPolicy `+ns+`/oauth2-doctor-test)`) {
				t.Errorf("%s: want the other provider and its policy named", f)
			}
		}
	})
	t.Run("EnvoyFilter on a waypoint", func(t *testing.T) {
		add(t, ctx, `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: waypoint-lua-doctor-test, namespace: default}
spec:
  workloadSelector: {labels: {gateway.istio.io/managed: istio.io-mesh-controller}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value: {name: envoy.filters.http.lua}
`)
		// A warning: exit code 0, unless --fail-on warning.
		fs := runDoctor(t, doctorOK, "--skip-health")
		if got := findingsOf(fs, "MW0040"); len(got) != 1 || got[0].Object.Name != "waypoint-lua-doctor-test" {
			t.Errorf("want MW0040 for EnvoyFilter default/waypoint-lua-doctor-test, got %v", got)
		}
		runDoctor(t, doctorFindings, "--skip-health", "--fail-on", "warning")
	})
	t.Run("waypoint policy with no waypoint", func(t *testing.T) {
		// The waypoint mode's CUSTOM policy targets the waypoint Gateway of
		// namespace default; no waypoint proxy runs for it here.
		objs, err := decodeObjects(meshwaf(t, "manifests", "--mode", "waypoint"))
		if err != nil {
			t.Fatal(err)
		}
		var policy *unstructured.Unstructured
		for _, u := range objs {
			if refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs"); u.GetKind() == "AuthorizationPolicy" && len(refs) > 0 {
				policy = u
			}
		}
		if policy == nil {
			t.Fatal("manifests --mode waypoint: no policy with targetRefs")
		}
		data, err := policy.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		add(t, ctx, string(data))
		fs := runDoctor(t, doctorFindings, "--skip-health")
		got := findingsOf(fs, "MW0036")
		if len(got) != 1 || got[0].Object.Kind != "Gateway" || got[0].Object.Namespace != policy.GetNamespace() {
			t.Errorf("want one MW0036 for the waypoint Gateway of %s, got %v", policy.GetNamespace(), got)
		}
	})
	t.Run("generated policies in dry-run", func(t *testing.T) {
		data := meshwaf(t, "policy", "generate", "-f", shopGraph, "--dry-run")
		objs, err := decodeObjects(data)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, u := range objs {
			if u.GetAnnotations()["istio.io/dry-run"] != "true" {
				continue
			}
			replace(t, ctx, u)
			want = append(want, u.GetNamespace()+"/"+u.GetName())
		}
		if len(want) == 0 {
			t.Fatal("policy generate --dry-run: no dry-run policy")
		}
		fs := runDoctor(t, doctorOK, "--skip-health")
		var got []string
		for _, f := range findingsOf(fs, "MW0050") {
			got = append(got, f.Object.Namespace+"/"+f.Object.Name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("MW0050 for %v, want %v", got, want)
		}
	})
	t.Run("healthy again", func(t *testing.T) {
		fs := runDoctor(t, doctorOK, "--skip-health")
		noErrorsOrWarnings(t, fs)
	})
}
