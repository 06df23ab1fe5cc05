package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/golden"
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
	golden.Check(t, filepath.Join(demoDir, "policies.yaml"), []byte(stdout))
}
