package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/install"
)

// buildMeshwaf builds the binary that ships (scripts/build.sh, server tags).
func buildMeshwaf(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "meshwaf")
	cmd := exec.Command(filepath.Join(repo, "scripts", "build.sh"), bin, "", "nodoctor")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// The meshwaf.yaml the chart renders is accepted by meshwaf's own loader
// (`meshwaf config validate`: strict keys, rules compiled), with default
// values and with profiles given as values; a key meshwaf does not know is
// refused by the schema before meshwaf sees it.
func TestChartConfigValidates(t *testing.T) {
	bin := buildMeshwaf(t)
	c := loadChart(t)
	cases := []struct {
		name  string
		vals  map[string]any
		valid bool
	}{
		{"defaults", nil, true},
		{"profiles", map[string]any{"config": map[string]any{
			"logLevel":       "debug",
			"defaultProfile": map[string]any{"requestBodyLimit": 1048576, "mode": "detect"},
			"profiles": []any{map[string]any{
				"name": "strict", "paranoiaLevel": 2, "requestBodyLimit": 1048576,
				"match":      map[string]any{"namespaces": []any{"payments"}},
				"exclusions": []any{map[string]any{"ruleIds": []any{920350}, "pathPrefix": "/api/"}},
			}},
		}}, true},
		// The schema cannot know CRS's rule ids; meshwaf refuses them.
		{"unknown rule id", map[string]any{"config": map[string]any{
			"defaultProfile": map[string]any{"requestBodyLimit": 1048576,
				"exclusions": []any{map[string]any{"ruleIds": []any{999999}}}},
		}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			manifest, err := helmTemplate(c, tc.vals)
			require.NoError(t, err)
			data := configFile(t, manifest)
			file := filepath.Join(t.TempDir(), install.ConfigKey)
			require.NoError(t, os.WriteFile(file, []byte(data), 0o600))
			out, err := exec.Command(bin, "config", "validate", file).CombinedOutput()
			if tc.valid {
				require.NoError(t, err, "meshwaf config validate:\n%s\n%s", out, data)
			} else {
				require.Error(t, err, "meshwaf config validate accepted:\n%s", data)
				require.Contains(t, string(out), "999999")
			}
		})
	}
}

// configFile is the ConfigMap's meshwaf.yaml as rendered, byte for byte.
func configFile(t *testing.T, manifest string) string {
	t.Helper()
	for _, d := range strings.Split(manifest, "\n---") {
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(d), &cm))
		if cm.Kind == "ConfigMap" {
			return cm.Data[install.ConfigKey]
		}
	}
	t.Fatal("no ConfigMap rendered")
	return ""
}
