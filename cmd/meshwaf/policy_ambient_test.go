package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const ambientGraph = "../../istio/testdata/graphs/ambient.yaml"

func TestPolicyAmbient(t *testing.T) {
	want := mustRead(t, filepath.Join("..", "..", "istio", "testdata", "golden", "ambient.ambient.yaml"))
	code, out, stderr := runCLI(t, "", "policy", "generate", "--dataplane", "ambient", "-f", ambientGraph)
	require.Equal(t, exitOK, code, stderr)
	require.Equal(t, want, out)
	generated := filepath.Join(t.TempDir(), "ambient.yaml")
	require.NoError(t, os.WriteFile(generated, []byte(out), 0o600))

	code, out, stderr = runCLI(t, "", "policy", "verify", "--dataplane", "ambient", "--graph", ambientGraph, "-f", generated)
	require.Equal(t, exitOK, code, "stdout: %s\nstderr: %s", out, stderr)
	require.Contains(t, out, "  [8] waypoint:shop/waypoint\n")
	require.Contains(t, out, "shop/api:8080                 . . . . A . . A\n", "www through the waypoint, and the waypoint itself")
	require.Contains(t, out, "meshwaf-system/meshwaf:9000   . . . . . . . A\n", "only the waypoint calls meshwaf")
	require.Contains(t, out, "OK: the policies allow exactly the planned flows\n")

	// The same policies read with sidecar semantics: every targetRefs
	// policy is ignored, so the waypoint's rules are lost.
	code, out, _ = runCLI(t, "", "policy", "verify", "--graph", ambientGraph, "-f", generated)
	require.Equal(t, exitError, code, out)
	require.Contains(t, out, "targetRefs attach it to gateways or waypoints, not sidecars: ignored")

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown dataplane", []string{"policy", "generate", "--dataplane", "cilium", "-f", ambientGraph}, `--dataplane "cilium": want sidecar or ambient`},
		{"no NetworkPolicies in ambient", []string{"policy", "generate", "--dataplane", "ambient", "--format", "networkpolicy", "-f", ambientGraph}, "HBONE"},
		{"narrowing without a waypoint", []string{"policy", "generate", "--dataplane", "ambient", "-f", "../../istio/testdata/graphs/full.yaml"},
			"spec.edges[0].methods: back/api has no waypoint: ztunnel enforces L4 only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, "", tt.args...)
			require.Equal(t, exitUsage, code)
			require.Contains(t, stderr, tt.want)
		})
	}
}
