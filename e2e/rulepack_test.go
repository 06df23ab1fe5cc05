package e2e

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRulePackCorpus runs the go-ftw tests of meshwaf's rule pack
// (inspector/rulepack/tests) as the CRS corpus is run, against meshwaf's
// defaults: every test must pass, and every rule has an attack test (the
// rule matches, the request is denied) and a benign one (the rule does not
// match, the request is allowed).
func TestRulePackCorpus(t *testing.T) {
	tests := loadFTWFiles(t, filepath.Join("..", "inspector", "rulepack", "tests", "*.yaml"))
	attack, benign := map[int]bool{}, map[int]bool{}
	for _, ct := range tests {
		id := ruleOf(t, ct)
		for _, st := range ct.test.Stages {
			if len(st.Output.Log.ExpectIDs) > 0 {
				require.Contains(t, st.Output.Log.ExpectIDs, id, ct.name)
				attack[id] = true
			}
			if len(st.Output.Log.NoExpectIDs) > 0 {
				require.Contains(t, st.Output.Log.NoExpectIDs, id, ct.name)
				benign[id] = true
			}
		}
	}
	require.NotEmpty(t, attack)
	require.Equal(t, attack, benign, "rules with attack tests and rules with benign tests")
	passed := runFTW(t, tests, filepath.Join("testdata", "rulepack", "meshwaf.yaml"), nil)
	require.Equal(t, len(tests), passed)
}

// ruleOf returns the rule id a test's name starts with.
func ruleOf(t *testing.T, ct corpusTest) int {
	t.Helper()
	id, _, _ := strings.Cut(ct.name, "-")
	n, err := strconv.Atoi(id)
	require.NoError(t, err, ct.name)
	return n
}
