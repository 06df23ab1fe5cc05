package inspector

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// Validate's errors carry their field path as data, relative to the
// profile, and quote values as written.
func TestValidateErrorPaths(t *testing.T) {
	p := Profile{Mode: "Blocking", Exclusions: []Exclusion{{RuleIDs: []int{942100}}, {Tags: []string{"a b"}, Methods: []string{"get"}}}}
	type located struct{ path, msg string }
	var got []located
	for _, e := range fielderr.Split(p.WithDefaults().Validate()) {
		var fe *fielderr.Error
		require.ErrorAs(t, e, &fe)
		got = append(got, located{fe.Path.String(), fe.Err.Error()})
	}
	require.Equal(t, []located{
		{"mode", `"Blocking" is neither "block" nor "detect"`},
		{"exclusions[1].tags", `"a b" is not a rule tag`},
		{"exclusions[1].methods", `"get" is not an upper-case HTTP method`},
	}, got)
}
