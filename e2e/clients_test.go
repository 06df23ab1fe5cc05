//go:build tools_e2e

// Real clients against the real binary: grpcurl and grpc-health-probe. They
// are separate programs, so these tests build only with the tools_e2e tag,
// which .ci/run sets after installing them. The tools are found through
// $GRPCURL and $GRPC_HEALTH_PROBE, else on PATH; a missing tool fails the
// test.

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func tool(t *testing.T, env, name, install string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: set $%s or put it on PATH (go install %s); .ci/run installs it", name, env, install)
	}
	return p
}

func runTool(t *testing.T, stdin string, name string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s: %v", name, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// The seed's SQL injection, as in the README's "Try it".
const grpcurlSQLi = `{"attributes": {"request": {"http": {
  "id": "demo-1", "method": "GET", "host": "db:8080", "protocol": "HTTP/1.1",
  "path": "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--",
  "headers": {":authority": "db:8080", ":method": "GET", "user-agent": "curl/8.5.0", "accept": "*/*", "x-request-id": "demo-1"}
}}}}`

func TestGrpcurlCheckDeniesSeedSQLi(t *testing.T) {
	t.Parallel()
	grpcurl := tool(t, "GRPCURL", "grpcurl", "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4")
	p := startServer(t)

	// Server reflection describes the service.
	code, out, stderr := runTool(t, "", grpcurl, "-plaintext", p.grpcAddr, "list")
	require.Equal(t, 0, code, "grpcurl list: %s", stderr)
	assert.Contains(t, out, "envoy.service.auth.v3.Authorization")
	assert.Contains(t, out, "grpc.health.v1.Health")

	code, out, stderr = runTool(t, grpcurlSQLi, grpcurl, "-plaintext", "-d", "@", p.grpcAddr, "envoy.service.auth.v3.Authorization/Check")
	require.Equal(t, 0, code, "grpcurl Check: %s", stderr)
	var resp struct {
		Status struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"status"`
		DeniedResponse struct {
			Status struct {
				Code string `json:"code"`
			} `json:"status"`
			Body string `json:"body"`
		} `json:"deniedResponse"`
		DynamicMetadata map[string]any `json:"dynamicMetadata"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &resp), "grpcurl output:\n%s", out)
	assert.Equal(t, 7, resp.Status.Code, "PERMISSION_DENIED")
	assert.Equal(t, "Forbidden", resp.DeniedResponse.Status.Code, "denied with 403")
	assert.Contains(t, resp.DeniedResponse.Body, `"request_id":"demo-1"`)
	assert.Equal(t, "deny", resp.DynamicMetadata["meshwaf_decision"])
	assert.Contains(t, resp.DynamicMetadata["meshwaf_rule_ids"], "942190")
}

func TestGrpcHealthProbe(t *testing.T) {
	t.Parallel()
	probe := tool(t, "GRPC_HEALTH_PROBE", "grpc-health-probe", "github.com/grpc-ecosystem/grpc-health-probe@v0.4.61")
	p := startServer(t, "--config", writeConfig(t, "drainDelay: 3s\nshutdownTimeout: 5s\n"))

	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		code, out, stderr := runTool(t, "", probe, "-addr", p.grpcAddr, "-service", svc)
		assert.Equal(t, 0, code, "probe of %q: %s%s", svc, out, stderr)
		assert.Contains(t, out+stderr, "SERVING", "probe of %q", svc)
	}
	// An unknown service is not healthy.
	code, _, _ := runTool(t, "", probe, "-addr", p.grpcAddr, "-service", "no.such.Service")
	assert.NotEqual(t, 0, code, "probe of an unknown service")

	// Draining: the probe reports NOT_SERVING (its exit code 4).
	p.sigterm(t)
	waitFor(t, 2*time.Second, "NOT_SERVING", func() bool {
		code, _, _ := runTool(t, "", probe, "-addr", p.grpcAddr)
		return code == 4
	})
	assert.Equal(t, 0, p.waitExit(t, 20*time.Second))
}
