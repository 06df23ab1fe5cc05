package main

import (
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite manifests/ from `meshwaf manifests --kustomize`")

// manifestsDir is the repository's manifests/ tree.
var manifestsDir = filepath.Join("..", "..", "manifests")

// TestManifestsGolden keeps manifests/base and manifests/overlays equal,
// byte for byte, to what `meshwaf manifests --kustomize` renders with the
// default options, and free of files it does not render.
func TestManifestsGolden(t *testing.T) {
	tmp := t.TempDir()
	code, stdout, stderr := runCLI(t, "", "manifests", "--kustomize", tmp)
	require.Equal(t, exitOK, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Empty(t, stdout)
	got := readTree(t, tmp)
	require.Contains(t, got, "overlays/mesh/kustomization.yaml")
	if *update {
		for _, sub := range []string{"base", "overlays"} {
			require.NoError(t, os.RemoveAll(filepath.Join(manifestsDir, sub)))
		}
		code, _, stderr := runCLI(t, "", "manifests", "--kustomize", manifestsDir)
		require.Equal(t, exitOK, code, stderr)
	}
	want := readTree(t, manifestsDir)
	for p := range want {
		if !strings.HasPrefix(p, "base/") && !strings.HasPrefix(p, "overlays/") {
			delete(want, p) // demo/, dashboard/, README: not rendered
		}
	}
	for p, g := range got {
		w, ok := want[p]
		require.True(t, ok, "manifests/%s is missing; run go test ./cmd/meshwaf -run TestManifestsGolden -update", p)
		require.Equal(t, w, g, "manifests/%s differs from what meshwaf manifests renders; if intended, rerun with -update", p)
	}
	for p := range want {
		_, ok := got[p]
		require.True(t, ok, "manifests/%s is not rendered by meshwaf manifests: remove it", p)
	}
}

func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	require.NoError(t, err)
	return files
}

// kustomizeInstall is how CI and developers get the kustomize this test runs.
const kustomizeInstall = "go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.2"

// kustomizeBinary is $MESHWAF_KUSTOMIZE, else kustomize on PATH, else the
// one in the user cache (where .ci/run puts it). When none is there it
// installs it into that cache from the Go module proxy, once, so that the
// README's test command works on a fresh machine; it fails, never skips,
// when that is impossible.
func kustomizeBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHWAF_KUSTOMIZE"); p != "" {
		return p
	}
	if p, err := exec.LookPath("kustomize"); err == nil {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "meshwaf-ci", "bin", "kustomize")
	if _, err := os.Stat(p); err != nil {
		installKustomize.Do(func() {
			t.Logf("kustomize not found; installing it: GOBIN=%s %s", filepath.Dir(p), kustomizeInstall)
			cmd := exec.Command("go", strings.Fields(kustomizeInstall)[1:]...) //nolint:gosec // fixed command
			cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(p), "GOFLAGS=")
			installOut, installErr = cmd.CombinedOutput()
		})
		require.NoError(t, installErr, "installing kustomize (%s) failed; set MESHWAF_KUSTOMIZE or put kustomize on PATH:\n%s",
			kustomizeInstall, installOut)
	}
	_, err := os.Stat(p)
	require.NoError(t, err, "kustomize not found: set MESHWAF_KUSTOMIZE, put kustomize on PATH, or run .ci/run (GOBIN=%s %s)",
		filepath.Dir(p), kustomizeInstall)
	return p
}

var (
	installKustomize sync.Once
	installOut       []byte
	installErr       error
)

func kustomizeBuild(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command(kustomizeBinary(t), "build", dir).CombinedOutput() //nolint:gosec // the test's own binary and dirs
	require.NoError(t, err, "kustomize build %s:\n%s", dir, out)
	return string(out)
}

// Every overlay, the pod component applied to an application, and the
// demo build with kustomize into the objects they promise.
func TestKustomizeBuild(t *testing.T) {
	out, err := exec.Command(kustomizeBinary(t), "version").CombinedOutput() //nolint:gosec // see kustomizeBinary
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "v5.", "want kustomize v5 (%s)", kustomizeInstall)

	base := []string{"AuthorizationPolicy", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace",
		"PeerAuthentication", "PodDisruptionBudget", "Service", "ServiceAccount"}
	tests := []struct {
		dir   string
		kinds []string // sorted, with repeats
	}{
		{"overlays/mesh", append([]string{"AuthorizationPolicy"}, base...)},
		{"overlays/envoyfilter", append(append([]string{}, base...), "EnvoyFilter")},
		{"overlays/pod", []string{"AuthorizationPolicy", "ServiceEntry"}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			_, kinds := yamlDocs(t, kustomizeBuild(t, filepath.Join(manifestsDir, tt.dir)))
			require.ElementsMatch(t, tt.kinds, kinds)
		})
	}

	t.Run("pod sidecar component", func(t *testing.T) {
		docs, kinds := yamlDocs(t, kustomizeBuild(t, filepath.Join("testdata", "manifests", "pod-app")))
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
