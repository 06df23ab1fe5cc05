package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/istio"
)

var (
	demoDir   = filepath.Join(manifestsDir, "demo")
	demoGraph = filepath.Join("..", "..", "examples", "shop-graph.yaml")
)

// The demo's policies are exactly what `meshwaf policy generate` makes of
// the shop graph.
func TestDemoPoliciesGenerated(t *testing.T) {
	code, stdout, stderr := runCLI(t, "", "policy", "generate", "-f", demoGraph)
	require.Equal(t, exitOK, code, stderr)
	p := filepath.Join(demoDir, "policies.yaml")
	if *update {
		require.NoError(t, os.WriteFile(p, []byte(stdout), 0o644))
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, string(want), stdout, "%s differs from meshwaf policy generate -f examples/shop-graph.yaml; rerun with -update", p)
}

// The demo builds with kustomize into meshwaf (mesh mode), the three
// opted-in workloads of the graph and their policies, and those policies
// allow exactly the graph's flows: auth→db is refused.
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
		require.Equal(t, istio.OptInValue, d.Spec.Template.Labels[istio.OptInLabel], name)
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

	all := filepath.Join(t.TempDir(), "demo.yaml")
	require.NoError(t, os.WriteFile(all, []byte(built), 0o600))
	code, stdout, stderr := runCLI(t, "", "policy", "verify", "--graph", demoGraph, "-f", all)
	require.Equal(t, exitOK, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, "OK: the policies allow exactly the planned flows")

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
