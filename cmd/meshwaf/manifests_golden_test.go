package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/golden"
)

// manifestsDir is the repository's manifests/ tree.
var manifestsDir = filepath.Join("..", "..", "manifests")

// TestManifestsGolden keeps manifests/base and manifests/overlays equal,
// byte for byte, to what `meshwaf manifests --kustomize` renders with the
// default options, and free of files it does not render (-update rewrites
// them).
func TestManifestsGolden(t *testing.T) {
	tmp := t.TempDir()
	code, stdout, stderr := runCLI(t, "", "manifests", "--kustomize", tmp)
	require.Equal(t, exitOK, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Empty(t, stdout)
	got := golden.ReadTree(t, tmp)
	require.Contains(t, got, "overlays/mesh/kustomization.yaml")
	// demo/, dashboard/, README: not rendered.
	rendered := func(p string) bool { return strings.HasPrefix(p, "base/") || strings.HasPrefix(p, "overlays/") }
	golden.CheckTree(t, manifestsDir, got, rendered)
}
