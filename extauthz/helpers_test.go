package extauthz

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshwaf/meshwaf/inspector"
)

// loadCheckRequest reads a CheckRequest fixture written as Envoy sends it.
func loadCheckRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "checkrequest", name))
	require.NoError(t, err)
	var req authv3.CheckRequest
	require.NoError(t, protojson.Unmarshal(data, &req), name)
	return &req
}

var (
	engineOnce sync.Once
	engine     *inspector.RuleSet
	engineErr  error
)

// testEngine returns a rule set with the default profile and a detect-mode
// profile named "watch", compiled once per test binary: what serve gives
// the server.
func testEngine(t testing.TB) *inspector.RuleSet {
	t.Helper()
	engineOnce.Do(func() {
		engine, engineErr = inspector.Compile(inspector.Profile{}, inspector.Profile{Name: "watch", Mode: inspector.ModeDetect})
	})
	require.NoError(t, engineErr)
	return engine
}
