package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The benchmark's phases on a small graph: the synthetic graph is valid and
// verify passes on the policies generated from it.
func TestPhasesSmall(t *testing.T) {
	dir := t.TempDir()
	for _, phase := range []string{"prepare", "generate", "verify"} {
		require.NoError(t, run([]string{"-phase", phase, "-dir", dir, "-services", "200", "-edges", "1500", "-namespaces", "7"}), phase)
	}
	data, err := os.ReadFile(filepath.Join(dir, "policies.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(data), "name: meshwaf-ext-authz-callers")
	require.Error(t, run([]string{"-phase", "nope", "-dir", dir}))
}
