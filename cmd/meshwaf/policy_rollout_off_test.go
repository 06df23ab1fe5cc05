//go:build nodoctor

package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPolicyRolloutLeftOut: the nodoctor build answers the cluster
// commands with an error that says where they are, and links neither
// client-go nor package rollout.
func TestPolicyRolloutLeftOut(t *testing.T) {
	for _, sub := range []string{"diff", "apply", "promote"} {
		var out, errOut bytes.Buffer
		code := runMain(context.Background(), []string{"policy", sub, "-f", "x"}, nil, &out, &errOut)
		require.Equal(t, 1, code, sub)
		require.Contains(t, errOut.String(), "built without the cluster commands", sub)
	}
	deps, err := exec.Command("go", "list", "-deps", "-tags", "nodoctor no_fs_access", ".").Output()
	require.NoError(t, err)
	for _, pkg := range strings.Fields(string(deps)) {
		require.False(t, strings.HasPrefix(pkg, "k8s.io/client-go/"), "the nodoctor build links %s", pkg)
		require.NotEqual(t, "github.com/meshwaf/meshwaf/rollout", pkg)
	}
}
