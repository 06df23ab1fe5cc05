package cluster

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// previousChart is the chart as last released, packaged by Helm's SDK
// (chartutil.Save, what `helm package` runs) from the tree that released it.
// A packaged file rather than a checkout of git history: CI clones may be
// shallow, and users upgrade from the package they installed.
const previousChart = "testdata/meshwaf-0.1.0.tgz"

// Namespaces of the Helm release, apart from every other test's objects.
const (
	helmNamespace = "meshwaf-helm"
	helmRoot      = "meshwaf-helm-root"
)

// helmConfig is Helm's action configuration against the test API server,
// releases stored as Secrets in ns (Helm's default driver).
func helmConfig(t *testing.T, ns string) *action.Configuration {
	t.Helper()
	cfg := new(action.Configuration)
	getter := kube.GetConfig(env.cluster.kubeconfig, "", ns)
	if err := cfg.Init(getter, ns, "secret", t.Logf); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func loadChartFile(t *testing.T, path string) *chart.Chart {
	t.Helper()
	c, err := loader.Load(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// withReplicas is a post-renderer that adds `replicas: n` to the
// Deployment, as a chart that renders replicas would.
type withReplicas string

func (n withReplicas) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	docs := strings.Split(in.String(), "\n---")
	for i, d := range docs {
		if strings.Contains(d, "\nkind: Deployment\n") {
			docs[i] = strings.Replace(d, "\nspec:\n", "\nspec:\n  replicas: "+string(n)+"\n", 1)
		}
	}
	return bytes.NewBufferString(strings.Join(docs, "\n---")), nil
}

// TestHelmUpgradeKeepsScale installs the previous chart with Helm's SDK
// (as `helm install -n meshwaf-helm --create-namespace --set
// createNamespace=false`, no --wait: there is no kubelet, nothing becomes
// ready), scales the Deployment through its scale subresource as the
// HorizontalPodAutoscaler's controller does (no controller-manager runs
// here, so the test plays its part), upgrades to the chart in the tree
// with a new image and maxReplicas, and checks that the scale survived
// while the upgrade did change the Deployment and the autoscaler. A last
// upgrade whose rendering carries `replicas: 2` shows what the check
// catches: it resets the scale.
func TestHelmUpgradeKeepsScale(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prev := loadChartFile(t, previousChart)
	cur := loadChartFile(t, filepath.Join(env.repo, "manifests", "helm", "meshwaf"))
	if prev.Metadata.Name != cur.Metadata.Name {
		t.Fatalf("%s is chart %q, the tree's is %q", previousChart, prev.Metadata.Name, cur.Metadata.Name)
	}
	pv, cv := semver.MustParse(prev.Metadata.Version), semver.MustParse(cur.Metadata.Version)
	if !pv.LessThan(cv) {
		t.Fatalf("chart version %s is not above the previous release %s: bump Chart.yaml's version", cv, pv)
	}
	if err := env.cluster.ensureNamespace(ctx, helmRoot); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.cluster.config)
	if err != nil {
		t.Fatal(err)
	}
	deployments := cs.AppsV1().Deployments(helmNamespace)
	hpas := cs.AutoscalingV2().HorizontalPodAutoscalers(helmNamespace)
	vals := func(image string, maxReplicas int) map[string]any {
		return map[string]any{
			"namespace": helmNamespace, "rootNamespace": helmRoot, "createNamespace": false,
			"image": image, "maxReplicas": maxReplicas,
		}
	}
	cfg := helmConfig(t, helmNamespace)

	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = "meshwaf", helmNamespace, true
	in.Timeout = time.Minute
	rel, err := in.RunWithContext(ctx, prev, vals("meshwaf:v0.1.0", 10))
	if err != nil {
		t.Fatalf("helm install %s: %v", previousChart, err)
	}
	if rel.Info.Status != release.StatusDeployed || rel.Chart.Metadata.Version != pv.Original() {
		t.Fatalf("install: release %s of chart %s", rel.Info.Status, rel.Chart.Metadata.Version)
	}
	dep, err := deployments.Get(ctx, "meshwaf", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		t.Fatalf("installed Deployment: replicas %v, want the API server's default 1 (the chart sets none)", dep.Spec.Replicas)
	}

	// The HPA's controller writes the scale subresource, nothing else.
	scale, err := deployments.GetScale(ctx, "meshwaf", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 4
	if _, err := deployments.UpdateScale(ctx, "meshwaf", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	check := func(step string, wantReplicas int32, wantImage string, wantMax int32) {
		t.Helper()
		dep, err := deployments.Get(ctx, "meshwaf", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != wantReplicas {
			t.Errorf("%s: Deployment replicas %v, want %d", step, dep.Spec.Replicas, wantReplicas)
		}
		if got := dep.Spec.Template.Spec.Containers[0].Image; got != wantImage {
			t.Errorf("%s: image %s, want %s", step, got, wantImage)
		}
		hpa, err := hpas.Get(ctx, "meshwaf", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: HorizontalPodAutoscaler: %v", step, err)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != wantMax {
			t.Errorf("%s: HorizontalPodAutoscaler min %v max %d, want 2 and %d", step, hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas, wantMax)
		}
		if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != "meshwaf" {
			t.Errorf("%s: HorizontalPodAutoscaler targets %+v", step, hpa.Spec.ScaleTargetRef)
		}
	}
	check("after install and scale", 4, "meshwaf:v0.1.0", 10)

	up := action.NewUpgrade(cfg)
	up.Namespace, up.Timeout = helmNamespace, time.Minute
	rel, err = up.RunWithContext(ctx, "meshwaf", cur, vals("meshwaf:v0.1.1", 8))
	if err != nil {
		t.Fatalf("helm upgrade to the tree's chart: %v", err)
	}
	if rel.Version != 2 || rel.Info.Status != release.StatusDeployed || rel.Chart.Metadata.Version != cv.Original() {
		t.Fatalf("upgrade: revision %d %s of chart %s", rel.Version, rel.Info.Status, rel.Chart.Metadata.Version)
	}
	check("after upgrade", 4, "meshwaf:v0.1.1", 8)

	// The control: a rendering with replicas resets the autoscaler's scale.
	up = action.NewUpgrade(cfg)
	up.Namespace, up.Timeout, up.PostRenderer = helmNamespace, time.Minute, withReplicas("2")
	if _, err := up.RunWithContext(ctx, "meshwaf", cur, vals("meshwaf:v0.1.1", 8)); err != nil {
		t.Fatalf("helm upgrade with replicas: %v", err)
	}
	check("after an upgrade that renders replicas: 2", 2, "meshwaf:v0.1.1", 8)

	un := action.NewUninstall(cfg)
	un.Timeout = time.Minute
	if _, err := un.Run("meshwaf"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	if _, err := hpas.Get(ctx, "meshwaf", metav1.GetOptions{}); err == nil {
		t.Error("helm uninstall left the HorizontalPodAutoscaler")
	}
}
