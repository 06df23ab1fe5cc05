package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const shopGraph = "../../examples/shop-graph.yaml"

func policyFixture(name string) string { return filepath.Join("testdata", "policy", name) }

func TestPolicyGenerate(t *testing.T) {
	golden := func(name string) string {
		return mustRead(t, filepath.Join("..", "..", "istio", "testdata", "golden", name))
	}
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		stdout   string   // exact, when set
		want     []string // substrings of stderr
	}{
		{"istio", []string{"policy", "generate", "-f", shopGraph}, "", exitOK, golden("shop.istio.yaml"), nil},
		{"dry-run", []string{"policy", "generate", "-f", shopGraph, "--dry-run"}, "", exitOK, golden("shop.istio-dry-run.yaml"), nil},
		{"networkpolicy", []string{"policy", "generate", "--format", "networkpolicy", "-f", shopGraph}, "", exitOK, golden("shop.networkpolicy.yaml"), nil},
		{"graph from stdin", []string{"policy", "generate", "-f", "-"}, mustRead(t, shopGraph), exitOK, golden("shop.istio.yaml"), nil},
		{"invalid graph: every error located", []string{"policy", "generate", "-f", policyFixture("bad-graph.yaml")}, "", exitUsage, "", []string{
			"testdata/policy/bad-graph.yaml:9:21: spec.edges[0].to: unknown service \"auth\"\n",
			"testdata/policy/bad-graph.yaml:10:33: spec.edges[1].ports[0]: port 5432 is not declared on default/db (declared: 8080)\n",
		}},
		{"dry-run has no NetworkPolicy form", []string{"policy", "generate", "-f", shopGraph, "--format", "networkpolicy", "--dry-run"}, "", exitUsage, "", []string{"no dry-run mode"}},
		{"unknown format", []string{"policy", "generate", "-f", shopGraph, "--format", "cilium"}, "", exitUsage, "", []string{`--format "cilium": want istio or networkpolicy`}},
		{"no graph", []string{"policy", "generate"}, "", exitUsage, "", []string{"-f graph.yaml is required"}},
		{"missing file", []string{"policy", "generate", "-f", "nope.yaml"}, "", exitUsage, "", []string{"nope.yaml"}},
		{"no subcommand", []string{"policy"}, "", exitUsage, "", []string{"want a subcommand: generate, verify, diff, apply or promote"}},
		{"unknown subcommand", []string{"policy", "frobnicate"}, "", exitUsage, "", []string{`unknown subcommand "frobnicate"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.stdin, tt.args...)
			require.Equal(t, tt.wantCode, code, "stderr: %s", stderr)
			if tt.stdout != "" {
				require.Equal(t, tt.stdout, stdout)
			}
			for _, w := range tt.want {
				require.Contains(t, stderr, w)
			}
		})
	}
}

func TestPolicyVerify(t *testing.T) {
	generated := filepath.Join(t.TempDir(), "shop.yaml")
	code, out, stderr := runCLI(t, "", "policy", "generate", "-f", shopGraph)
	require.Equal(t, exitOK, code, stderr)
	require.NoError(t, os.WriteFile(generated, []byte(out), 0o600))
	dryRun := filepath.Join(t.TempDir(), "shop-dry-run.yaml")
	code, out, stderr = runCLI(t, "", "policy", "generate", "-f", shopGraph, "--dry-run")
	require.Equal(t, exitOK, code, stderr)
	require.NoError(t, os.WriteFile(dryRun, []byte(out), 0o600))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // substrings of stdout+stderr
	}{
		{"generated policies pass", []string{"--graph", shopGraph, "-f", generated}, exitOK, []string{
			"graph shop: 3 services, 2 edges; 5 AuthorizationPolicies read\n",
			"  [3] default/www\n",
			"default/auth:8080             . . A .\n",
			"default/db:8080               . . A .\n",
			"default/www:8080              . . . A\n",
			"meshwaf-system/meshwaf:9000   A A A .\n",
			"OK: the policies allow exactly the planned flows\n",
		}},
		{"a directory and files, repeated -f", []string{"--graph", shopGraph, "-f", policyFixture("shop-split"), "-f", shopGraph}, exitOK, []string{
			"5 AuthorizationPolicies read",
			"note: ../../examples/shop-graph.yaml:5: ignored meshwaf.io/v1alpha1 ServiceGraph shop (not an AuthorizationPolicy)",
			"OK",
		}},
		{"hand edit adds auth -> db", []string{"--graph", shopGraph, "-f", "../../istio/testdata/policies/shop-auth-to-db.yaml"}, exitError, []string{
			"default/db:8080               + . A .\n",
			"extra: allowed but not planned (1):\n  default/auth -> default/db:8080\n",
			"MISMATCH: 1 extra\n",
		}},
		{"root-namespace DENY removes www -> db", []string{"--graph", shopGraph, "-f", generated, "-f", policyFixture("root-deny-www.yaml")}, exitError, []string{
			"missing: planned but denied (1):\n  default/www -> default/db:8080\n",
			"MISMATCH: 1 missing\n",
			"meshwaf policy: the policies do not allow exactly the flows of graph shop",
		}},
		{"dry-run policies enforce nothing", []string{"--graph", shopGraph, "-f", dryRun, "--matrix", "never"}, exitError, []string{
			"note: " + dryRun + ":7: default/allow-nothing: dry-run (istio.io/dry-run), not enforced: ignored\n",
			"  default/auth -> default/db:8080\n",
			"MISMATCH: 14 extra\n",
		}},
		{"matrix omitted on request", []string{"--graph", shopGraph, "-f", generated, "--matrix", "never"}, exitOK, []string{"OK"}},
		{"bad policy file", []string{"--graph", shopGraph, "-f", policyFixture("bad-policy.yaml")}, exitUsage, []string{
			`testdata/policy/bad-policy.yaml:1: AuthorizationPolicy default/typo: spec: `, `unknown field "rule"`,
		}},
		{"bad graph", []string{"--graph", policyFixture("bad-graph.yaml"), "-f", generated}, exitUsage, []string{"bad-graph.yaml:9:21: spec.edges[0].to"}},
		{"no graph", []string{"-f", generated}, exitUsage, []string{"--graph graph.yaml is required"}},
		{"no policies", []string{"--graph", shopGraph}, exitUsage, []string{"-f policies.yaml is required"}},
		{"bad matrix", []string{"--graph", shopGraph, "-f", generated, "--matrix", "sometimes"}, exitUsage, []string{`--matrix "sometimes"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", append([]string{"policy", "verify"}, tt.args...)...)
			require.Equal(t, tt.wantCode, code, "stdout: %s\nstderr: %s", stdout, stderr)
			for _, w := range tt.want {
				require.Contains(t, stdout+stderr, w)
			}
		})
	}
}
