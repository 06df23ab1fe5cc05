package kustomize

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/install"
	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// kustomizeAPI is the sigs.k8s.io/kustomize/api version of kustomize v5.8.2.
const kustomizeAPI = "v0.21.2"

var (
	manifestsDir = filepath.Join("..", "..", "manifests")
	demoDir      = filepath.Join(manifestsDir, "demo")
	demoGraph    = filepath.Join("..", "..", "examples", "shop-graph.yaml")
)

// kustomizeBuild is `kustomize build dir` with kustomize's defaults.
func kustomizeBuild(t *testing.T, dir string) string {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	out, err := m.AsYaml()
	require.NoError(t, err)
	return string(out)
}

// yamlDocs splits multi-document YAML into documents with their kinds.
func yamlDocs(t *testing.T, b string) (docs []map[string]any, kinds []string) {
	t.Helper()
	for _, d := range strings.Split(b, "\n---\n") {
		if strings.TrimSpace(d) == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(d), &m), "%s", d)
		docs = append(docs, m)
		kind, _ := m["kind"].(string)
		kinds = append(kinds, kind)
	}
	return docs, kinds
}

// The kustomize these tests run is the pinned one (test binaries carry no
// module list, so go.mod is read).
func TestKustomizeVersion(t *testing.T) {
	mod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	require.Contains(t, string(mod), "\tsigs.k8s.io/kustomize/api "+kustomizeAPI+"\n", "want kustomize v5.8.2's api module")
}

// Every overlay, the pod component applied to an application, and the
// demo build with kustomize into the objects they promise.
func TestKustomizeBuild(t *testing.T) {
	base := []string{"AuthorizationPolicy", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace",
		"PeerAuthentication", "PodDisruptionBudget", "Service", "ServiceAccount"}
	tests := []struct {
		dir   string
		kinds []string // sorted, with repeats
	}{
		{"overlays/mesh", append([]string{"AuthorizationPolicy"}, base...)},
		{"overlays/envoyfilter", append(append([]string{}, base...), "EnvoyFilter")},
		{"overlays/pod", []string{"AuthorizationPolicy", "ServiceEntry"}},
		{"overlays/waypoint", append([]string{"AuthorizationPolicy"}, base...)},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			_, kinds := yamlDocs(t, kustomizeBuild(t, filepath.Join(manifestsDir, tt.dir)))
			require.ElementsMatch(t, tt.kinds, kinds)
		})
	}

	t.Run("pod sidecar component", func(t *testing.T) {
		docs, kinds := yamlDocs(t, kustomizeBuild(t, filepath.Join("testdata", "pod-app")))
		require.ElementsMatch(t, []string{"ConfigMap", "Deployment", "Deployment"}, kinds)
		for i, k := range kinds {
			if k != "Deployment" {
				require.Equal(t, "shop", docs[i]["metadata"].(map[string]any)["namespace"], "the ConfigMap lands in the app's namespace")
				continue
			}
			raw, err := yaml.Marshal(docs[i])
			require.NoError(t, err)
			var d appsv1.Deployment
			require.NoError(t, yaml.UnmarshalStrict(raw, &d))
			var names []string
			for _, c := range d.Spec.Template.Spec.Containers {
				names = append(names, c.Name)
			}
			if d.Name == "inspected" {
				require.ElementsMatch(t, []string{"app", "meshwaf"}, names)
				require.Equal(t, "enabled", d.Spec.Template.Labels["meshwaf.io/inspect"])
				require.Equal(t, "app", d.Spec.Template.Labels["app"], "the app's own labels stay")
				require.Equal(t, "meshwaf-pod", d.Spec.Template.Spec.Volumes[0].ConfigMap.Name)
			} else {
				require.Equal(t, []string{"app"}, names, "a Deployment without the opt-in label is left alone")
			}
		}
	})
}

// The README's way to name your own image: kustomize's images transformer
// on the name the manifests use, with the tag of this tree's version.
func TestImageOverride(t *testing.T) {
	dir := t.TempDir()
	overlay, err := filepath.Abs(filepath.Join(manifestsDir, "overlays", "mesh"))
	require.NoError(t, err)
	rel, err := filepath.Rel(dir, overlay)
	require.NoError(t, err)
	k := "resources:\n- " + filepath.ToSlash(rel) + "\nimages:\n- name: meshwaf\n  newName: your-registry/meshwaf\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600))
	docs, kinds := yamlDocs(t, kustomizeBuild(t, dir))
	var images []string
	for i, kind := range kinds {
		if kind != "Deployment" {
			continue
		}
		raw, err := yaml.Marshal(docs[i])
		require.NoError(t, err)
		var d appsv1.Deployment
		require.NoError(t, yaml.UnmarshalStrict(raw, &d))
		for _, c := range d.Spec.Template.Spec.Containers {
			images = append(images, c.Image)
		}
	}
	require.Equal(t, []string{"your-registry/meshwaf:" + strings.TrimPrefix(install.DefaultImage, "meshwaf:")}, images)
	require.True(t, strings.HasPrefix(install.DefaultImage, "meshwaf:"), install.DefaultImage)
}

// The demo builds with kustomize into meshwaf (mesh mode), the three
// opted-in workloads of the graph and their policies, and those policies
// allow exactly the graph's flows (what `meshwaf policy verify` checks):
// auth→db is refused.
func TestDemo(t *testing.T) {
	built := kustomizeBuild(t, demoDir)
	docs, kinds := yamlDocs(t, built)
	count := map[string]int{}
	for _, k := range kinds {
		count[k]++
	}
	require.Equal(t, map[string]int{
		"Namespace": 2, "ServiceAccount": 4, "ConfigMap": 1, "Deployment": 4, "Service": 4,
		"PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1, "PeerAuthentication": 1,
		"AuthorizationPolicy": 2 + 5, // meshwaf's own two + the generated five
	}, count)

	apps := map[string]appsv1.Deployment{}
	for i, k := range kinds {
		if k != "Deployment" {
			continue
		}
		raw, err := yaml.Marshal(docs[i])
		require.NoError(t, err)
		var d appsv1.Deployment
		require.NoError(t, yaml.UnmarshalStrict(raw, &d))
		apps[d.Name] = d
	}
	require.Contains(t, apps, "meshwaf")
	for _, name := range []string{"www", "auth", "db"} {
		d := apps[name]
		require.Equal(t, install.OptInValue, d.Spec.Template.Labels[install.OptInLabel], name)
		require.Equal(t, name, d.Spec.Template.Labels["app"], "the graph's default selector")
		require.Equal(t, name, d.Spec.Template.Spec.ServiceAccountName, "the graph's default identity")
		for _, c := range d.Spec.Template.Spec.Containers {
			require.True(t, strings.HasPrefix(c.Image, "kellybrazil/microsim"), c.Image)
			require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
		}
	}
	env := map[string]string{}
	for _, c := range apps["www"].Spec.Template.Spec.Containers {
		if c.Name == "microsimclient" {
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
		}
	}
	require.Equal(t, "True", env["SEND_SQLI"])
	require.Contains(t, env["REQUEST_URLS"], "http://auth.default.svc.cluster.local:8080")
	require.Contains(t, env["REQUEST_URLS"], "http://db.default.svc.cluster.local:8080")

	// What `meshwaf policy verify --graph examples/shop-graph.yaml -f demo.yaml` does.
	all := filepath.Join(t.TempDir(), "demo.yaml")
	require.NoError(t, os.WriteFile(all, []byte(built), 0o600))
	g, err := meshpolicy.Load(demoGraph)
	require.NoError(t, err)
	set, err := istio.LoadPolicies(all)
	require.NoError(t, err)
	plan := meshpolicy.NewPlan(g)
	got, _ := istio.Evaluate(plan, set.Policies, istio.EvalOptions{RootNamespace: "istio-system"})
	diff := plan.Compare(plan.Expected(), got)
	var b strings.Builder
	require.NoError(t, diff.WriteDiff(&b, false))
	require.False(t, diff.Mismatch(false), "the demo's policies do not allow exactly the graph's flows:\n%s", b.String())

	raw, err := os.ReadFile(filepath.Join(demoDir, "compromised-auth.yaml"))
	require.NoError(t, err)
	var attacker appsv1.Deployment
	require.NoError(t, yaml.UnmarshalStrict(raw, &attacker))
	spec := attacker.Spec.Template.Spec
	require.Equal(t, "auth", spec.ServiceAccountName, "runs with auth's identity")
	require.Equal(t, []corev1.EnvVar{
		{Name: "REQUEST_URLS", Value: "http://db.default.svc.cluster.local:8080"}, {Name: "REQUEST_WAIT_SECONDS", Value: "2"},
	}, spec.Containers[0].Env)
	require.NotEqual(t, "auth", attacker.Spec.Template.Labels["app"], "not an endpoint of the auth Service")
}
