//go:build !nodoctor

package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// waypointGraph has a service behind a waypoint.
const waypointGraph = `apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: amb}
spec:
  services:
  - {name: www, ports: [{port: 8080, protocol: HTTP}]}
  - {name: db, ports: [{port: 8080, protocol: HTTP}], waypoint: wp}
  edges:
  - {from: www, to: db, ports: [8080]}
`

// The cluster commands check their flags before reading a kubeconfig:
// each mistake is a usage error (exit 2) naming the flag. The commands
// themselves run against a real API server in test/cluster.
func TestPolicyRolloutUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "diff"}, "-f graph.yaml is required"},
		{[]string{"policy", "diff", "-f", "examples/shop-graph.yaml", "-o", "yaml"}, `-o "yaml"`},
		{[]string{"policy", "apply", "-f", "../../examples/shop-graph.yaml", "--stage", "canary"}, `stage "canary"`},
		{[]string{"policy", "apply", "-f", "../../examples/shop-graph.yaml", "--dry-run", "client"}, `--dry-run "client"`},
		{[]string{"policy", "apply", "-f", "../../examples/shop-graph.yaml", "extra"}, "unexpected arguments"},
		{[]string{"policy", "promote", "-f", "../../examples/shop-graph.yaml"}, "--prometheus URL is required"},
		{[]string{"policy", "promote", "-f", "../../examples/shop-graph.yaml", "--prometheus", "http://x", "--stable-for", "0s"}, "--stable-for 0s"},
		{[]string{"policy", "frobnicate"}, "generate, verify, diff, apply or promote"},
		{[]string{"policy", "apply", "-f", "-"}, "the sidecar data plane only"},
	} {
		code, stdout, stderr := runCLI(t, waypointGraph, tt.args...)
		require.Equal(t, exitUsage, code, "%v: %s", tt.args, stderr)
		require.Empty(t, stdout, tt.args)
		require.Contains(t, stderr, tt.want, tt.args)
	}
}

// A kubeconfig that cannot be read is an error (exit 1), not drift.
func TestPolicyDiffNoCluster(t *testing.T) {
	code, _, stderr := runCLI(t, "", "policy", "diff", "-f", "../../examples/shop-graph.yaml", "--kubeconfig", t.TempDir()+"/missing")
	require.Equal(t, exitError, code, stderr)
	require.Contains(t, stderr, "kubeconfig")
}
