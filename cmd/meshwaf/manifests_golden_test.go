package main

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
