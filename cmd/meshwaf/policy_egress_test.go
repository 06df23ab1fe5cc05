package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPolicyGenerateEgress(t *testing.T) {
	golden := func(name string) string {
		return mustRead(t, filepath.Join("..", "..", "istio", "testdata", "golden", name))
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		stdout   string   // exact, when set
		want     []string // substrings of stderr
	}{
		{"istio", []string{"--egress"}, exitOK, golden("shop.istio-egress.yaml"), nil},
		{"networkpolicy", []string{"--egress", "--format", "networkpolicy"}, exitOK, golden("shop.networkpolicy-egress.yaml"), nil},
		{"dry-run has no Sidecar form", []string{"--egress", "--dry-run"}, exitUsage, "", []string{"Sidecars have no dry-run mode"}},
		{"ambient has no sidecars to scope", []string{"--egress", "--dataplane", "ambient"}, exitUsage, "", []string{"no sidecar for a Sidecar resource"}},
		{"extra hosts need --egress", []string{"--egress-host", "obs/otel.obs.svc.cluster.local"}, exitUsage, "", []string{"only with --egress"}},
		{"extra hosts are Sidecar hosts", []string{"--egress", "--format", "networkpolicy", "--egress-host", "obs/otel.obs.svc.cluster.local"}, exitUsage, "", []string{"in the istio format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", append([]string{"policy", "generate", "-f", shopGraph}, tt.args...)...)
			require.Equal(t, tt.wantCode, code, stderr)
			if tt.stdout != "" {
				require.Equal(t, tt.stdout, stdout)
			}
			for _, w := range tt.want {
				require.Contains(t, stderr, w)
			}
		})
	}
}

func TestPolicyVerifyEgress(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	gen := func(args ...string) string {
		code, out, stderr := runCLI(t, "", append([]string{"policy", "generate", "-f", shopGraph}, args...)...)
		require.Equal(t, exitOK, code, stderr)
		return out
	}
	ingress := write("ingress.yaml", gen())
	sidecars := write("egress.yaml", gen("--egress"))
	nps := write("np.yaml", gen("--egress", "--format", "networkpolicy"))
	// www's Sidecar without db, and an extra host for auth.
	broken := write("broken.yaml", strings.Replace(strings.Replace(gen("--egress"),
		"    - default/db.default.svc.cluster.local\n", "", 1),
		"  - hosts:\n    - kube-system/", "  - hosts:\n    - other/x.other.svc.cluster.local\n    - kube-system/", 1))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
		not      []string
	}{
		{"Sidecars pass", []string{"-f", sidecars}, exitOK, []string{
			"egress (Sidecars): 3 read\n", "  OK: every service's Sidecars allow exactly its graph calls\n"}, nil},
		{"no egress objects: nothing said", []string{"-f", ingress}, exitOK, nil, []string{"egress"}},
		{"--egress requires them", []string{"-f", ingress, "--egress"}, exitUsage, []string{"no Sidecar and no NetworkPolicy with egress"}, nil},
		{"a missing and an extra host", []string{"-f", broken}, exitError, []string{
			"  missing: default/www -> default/db.default.svc.cluster.local\n",
			"  extra: default/auth -> other/x.other.svc.cluster.local\n",
			"the egress objects do not allow exactly the calls of graph shop"}, nil},
		{"NetworkPolicy egress passes (ingress is another matter)", []string{"-f", nps, "-f", ingress}, exitOK, []string{
			"egress (NetworkPolicies): 4 read\n", "  OK: every service's NetworkPolicies allow exactly its graph calls\n"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", append([]string{"policy", "verify", "--graph", shopGraph, "--matrix", "never"}, tt.args...)...)
			require.Equal(t, tt.wantCode, code, "stdout: %s\nstderr: %s", stdout, stderr)
			for _, w := range tt.want {
				require.Contains(t, stdout+stderr, w)
			}
			for _, w := range tt.not {
				require.NotContains(t, stdout+stderr, w)
			}
		})
	}
}
