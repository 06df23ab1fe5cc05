package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

// runCLI runs the command in process, as main would, and returns its exit
// code and outputs.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runMain(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestInspectCommand(t *testing.T) {
	seed := "http://db:8080/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		want     []string
	}{
		{"seed sqli from flags", []string{"inspect", "-url", seed}, "", exitDenied,
			[]string{"decision: deny (status 403, rule 949110)", "942190", "SQL"}},
		{"seed sqli from raw file", []string{"inspect", "-raw", filepath.Join("testdata", "requests", "seed-sqli.http")}, "", exitDenied,
			[]string{"decision: deny", "942190"}},
		{"raw request from stdin", []string{"inspect", "-raw", "-"}, mustRead(t, "testdata/requests/json-create.http"), exitOK,
			[]string{"decision: allow", "POST /api/v1/users"}},
		{"json body allowed", []string{"inspect", "-url", "/api/v1/users", "-H", "Content-Type: application/json", "-data", `{"name":"Joe"}`}, "", exitOK,
			[]string{"decision: allow", "rules:    none matched"}},
		{"body from stdin", []string{"inspect", "-url", "/search", "-data-file", "-"}, "q=<script>alert(1)</script>", exitDenied,
			[]string{"decision: deny", "941"}},
		{"detect mode passes", []string{"inspect", "-mode", "detect", "-url", seed}, "", exitOK,
			[]string{"decision: detect", "942190"}},
		{"paranoia level flag", []string{"inspect", "-paranoia-level", "4", "-url", "/a?b=c"}, "", exitOK,
			[]string{"paranoia level 4"}},
		{"bad header flag", []string{"inspect", "-H", "nocolon"}, "", exitUsage, []string{"want \"Name: value\""}},
		{"bad url", []string{"inspect", "-url", "db:8080/x"}, "", exitUsage, []string{"want http://host/path or /path"}},
		{"bad output", []string{"inspect", "-o", "yaml"}, "", exitUsage, []string{"want text or json"}},
		{"bad mode", []string{"inspect", "-mode", "blok"}, "", exitUsage, []string{"mode"}},
		{"bad raw request", []string{"inspect", "-raw", "-"}, "not http\r\n\r\n", exitUsage, []string{"not an HTTP/1.x request"}},
		{"bad rules in config", []string{"inspect", "-config", filepath.Join("testdata", "config", "bad-rules.yaml")}, "", exitUsage,
			[]string{"bad-rules.yaml:1: defaultProfile: profile \"default\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.stdin, tt.args...)
			require.Equal(t, tt.wantCode, code, "stdout: %s\nstderr: %s", stdout, stderr)
			for _, w := range tt.want {
				require.Contains(t, stdout+stderr, w)
			}
		})
	}
}

func TestInspectJSON(t *testing.T) {
	code, stdout, stderr := runCLI(t, "", "inspect", "-o", "json", "-url", "/?id=1%27%20OR%20%271%27%3D%271")
	require.Equal(t, exitDenied, code, stderr)
	var v inspector.Verdict
	require.NoError(t, json.Unmarshal([]byte(stdout), &v))
	require.Equal(t, inspector.Deny, v.Decision)
	require.GreaterOrEqual(t, v.AnomalyScore, 5)
	require.NotEmpty(t, v.Matches)
}

func TestEnvironmentAndFlagPrecedence(t *testing.T) {
	seed := "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"
	cfgFile := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("defaultProfile:\n  mode: block\n  paranoiaLevel: 2\n"), 0o600))

	// The file says block; the environment says detect and wins.
	t.Setenv("MESHWAF_MODE", "detect")
	code, stdout, _ := runCLI(t, "", "inspect", "-config", cfgFile, "-url", seed)
	require.Equal(t, exitOK, code)
	require.Contains(t, stdout, "paranoia level 2, threshold 5, detect")

	// A flag beats the environment.
	code, stdout, _ = runCLI(t, "", "inspect", "-config", cfgFile, "-mode", "block", "-url", seed)
	require.Equal(t, exitDenied, code)
	require.Contains(t, stdout, "block)")

	// The config file itself can come from the environment.
	t.Setenv("MESHWAF_CONFIG", cfgFile)
	t.Setenv("MESHWAF_PARANOIA_LEVEL", "3")
	_, stdout, _ = runCLI(t, "", "inspect", "-url", "/")
	require.Contains(t, stdout, "paranoia level 3")

	t.Setenv("MESHWAF_PARANOIA_LEVEL", "three")
	code, _, stderr := runCLI(t, "", "inspect", "-url", "/")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "MESHWAF_PARANOIA_LEVEL")
}

func TestServeBadConfigExitCode(t *testing.T) {
	for _, f := range []string{"unknown-key.yaml", "bad-paranoia-level.yaml", "bad-rules.yaml", "bad-grpc-address.yaml",
		"negative-drain-delay.yaml", "small-max-message.yaml", "small-max-message-profile.yaml"} {
		// A config serve wrongly accepts serves until the deadline, then exits 0.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var out, errb bytes.Buffer
		code := runMain(ctx, []string{"serve", "-config", filepath.Join("testdata", "config", f),
			"-grpc-address", "127.0.0.1:0", "-admin-address", "127.0.0.1:0"}, strings.NewReader(""), &out, &errb)
		cancel()
		stderr := errb.String()
		require.Equal(t, exitUsage, code, f)
		require.Contains(t, stderr, f)
	}
}

func TestServeBadAddressFlag(t *testing.T) {
	for _, args := range [][]string{
		{"-grpc-address", "nonsense", "-admin-address", "127.0.0.1:0"},
		{"-grpc-address", "127.0.0.1:0", "-admin-address", "127.0.0.1:70000"},
	} {
		code, _, stderr := runCLI(t, "", append([]string{"serve"}, args...)...)
		require.Equal(t, exitUsage, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "-address")
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "version")
	require.Equal(t, exitOK, code)
	require.Contains(t, stdout, "crs "+inspector.CRSVersion)
	require.Contains(t, stdout, "coraza v3.")

	code, _, stderr := runCLI(t, "")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "Usage:")
	code, _, stderr = runCLI(t, "", "frobnicate")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, `unknown command "frobnicate"`)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
