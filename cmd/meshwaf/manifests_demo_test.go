package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
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
