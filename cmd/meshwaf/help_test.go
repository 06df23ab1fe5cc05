package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every command has a help page with a description, a usage line,
// examples and its flags in --flag style; `meshwaf help CMD`,
// `meshwaf CMD --help` and `meshwaf CMD -h` print the same page to stdout.
func TestCommandHelp(t *testing.T) {
	tests := []struct {
		cmd   []string
		want  []string // on the page besides the common parts
		flags bool
	}{
		{[]string{"serve"}, []string{"Runs the ext_authz gRPC service", "--grpc-address string", "--fail-open", "env MESHWAF_GRPC_ADDRESS"}, true},
		{[]string{"inspect"}, []string{"Evaluates one request offline", "--url string", "--profile string", "exit code 3"}, true},
		{[]string{"config", "validate"}, []string{"every error", "meshwaf config validate meshwaf.yaml"}, false},
		{[]string{"policy", "generate"}, []string{"ServiceGraph", "--format string", "--dry-run"}, true},
		{[]string{"policy", "verify"}, []string{"reachability matrix", "--graph string", "--strict"}, true},
		{[]string{"policy", "diff"}, []string{"edited by hand", "--as-enforced", "--kubeconfig string", "Exit code 0 without drift, 3 with drift"}, true},
		{[]string{"policy", "apply"}, []string{"field manager", "--stage string", "--dry-run string", "--prune", "default-deny"}, true},
		{[]string{"policy", "promote"}, []string{"shadow denials", "--prometheus string", "--stable-for duration", "(default 10m0s)"}, true},
		{[]string{"graph", "discover"}, []string{"istio_requests_total", "--prometheus URL", "--lookback string", "--min-requests int", "--merge FILE"}, true},
		{[]string{"manifests"}, []string{"--mode envoyfilter", "--kustomize string", "--image string", "--fail-open"}, true},
		{[]string{"doctor"}, []string{"read-only", "--kubeconfig string", "--fail-on string", "--health-address string", "exit code 3"}, true},
		{[]string{"version"}, []string{"Prints the versions"}, false},
	}
	for _, tt := range tests {
		name := strings.Join(tt.cmd, " ")
		t.Run(name, func(t *testing.T) {
			code, page, stderr := runCLI(t, "", append([]string{"help"}, tt.cmd...)...)
			require.Equal(t, exitOK, code, stderr)
			require.Empty(t, stderr)
			require.NotContains(t, page, "Usage of", "the flag package's bare usage")
			require.NotContains(t, page, "Run 'meshwaf help <command>'", "the global usage")
			require.Contains(t, page, "Usage:\n  meshwaf "+name)
			require.Contains(t, page, "\nExamples:\n  meshwaf "+name)
			if tt.flags {
				require.Contains(t, page, "\nFlags:\n  -")
				require.NotRegexp(t, `(?m)^  -[a-z]{2,}`, page, "flags are written --flag")
			}
			for _, w := range tt.want {
				require.Contains(t, page, w)
			}
			for _, h := range []string{"--help", "-h"} {
				code, out, stderr := runCLI(t, "", append(append([]string{}, tt.cmd...), h)...)
				require.Equal(t, exitOK, code, stderr)
				require.Equal(t, page, out, "meshwaf %s %s", name, h)
				require.Empty(t, stderr)
			}
		})
	}
}

func TestHelpErrors(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "help")
	require.Equal(t, exitOK, code)
	require.Contains(t, stdout, "Run 'meshwaf help <command>'")

	for _, group := range []struct {
		cmd  string
		subs []string
	}{{"policy", []string{"generate", "verify"}}, {"config", []string{"validate"}}, {"graph", []string{"discover"}}} {
		code, stdout, stderr := runCLI(t, "", "help", group.cmd)
		require.Equal(t, exitOK, code, stderr)
		for _, s := range group.subs {
			require.Contains(t, stdout, "meshwaf "+group.cmd+" "+s)
		}
	}

	code, _, stderr := runCLI(t, "", "help", "frobnicate")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `unknown command "frobnicate"`)

	// A bad flag is a usage error (exit 2) that points at the help page.
	for _, args := range [][]string{{"serve", "--nosuch"}, {"inspect", "--nosuch"}, {"policy", "verify", "--nosuch"},
		{"config", "validate", "--nosuch"}, {"manifests", "--nosuch"}, {"doctor", "--nosuch"}, {"graph", "discover", "--nosuch"}} {
		code, stdout, stderr := runCLI(t, "", args...)
		require.Equal(t, exitUsage, code, args)
		require.Empty(t, stdout)
		require.Contains(t, stderr, "flag provided but not defined: -nosuch")
		require.Contains(t, stderr, "meshwaf help "+strings.Join(args[:len(args)-1], " "))
	}
}
