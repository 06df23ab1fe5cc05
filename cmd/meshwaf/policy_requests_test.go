package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// policy verify compares the methods and paths of narrowed flows, not only
// that they are narrowed: a path with a comma split in two by a hand edit
// (or by a renderer that joins lists) is a mismatch naming both sets.
func TestPolicyVerifyComparesRequests(t *testing.T) {
	dir := filepath.Join("..", "..", "istio", "testdata", "requests")
	graph := filepath.Join(dir, "graph.yaml")
	tests := []struct {
		fixture  string
		wantCode int
		want     []string
	}{
		{"comma-split", exitError, []string{
			"shop/api:8080   . A .\n", // the cell tells only some vs every request
			"requests: planned and allowed for other methods or paths (1):\n" +
				`  shop/www -> shop/api:8080: planned methods ["GET", "POST"] paths ["/admin/users", "/x,y"]; ` +
				`allowed methods ["GET", "POST"] paths ["/admin/users", "/x", "y"] (e.g. GET "/x": allowed, not planned)` + "\n",
			"MISMATCH: 1 with other requests\n",
			"meshwaf policy: the policies do not allow exactly the flows of graph requests",
		}},
		{"identical", exitOK, []string{"OK: the policies allow exactly the planned flows\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "", "policy", "verify", "--graph", graph, "-f", filepath.Join(dir, tt.fixture+".yaml"))
			require.Equal(t, tt.wantCode, code, "stdout: %s\nstderr: %s", stdout, stderr)
			for _, w := range tt.want {
				require.Contains(t, stdout+stderr, w)
			}
		})
	}
}
