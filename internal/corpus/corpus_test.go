package corpus

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func countLeaves(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := 0
		for _, e := range x {
			n += countLeaves(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range x {
			n += countLeaves(e)
		}
		return n
	default:
		return 1
	}
}

func TestJSON1KiBShape(t *testing.T) {
	body := JSON1KiB().Body
	var doc any
	require.NoError(t, json.Unmarshal(body, &doc))
	require.Equal(t, 54, countLeaves(doc))
	require.InDelta(t, 1024, len(body), 200, "about 1 KiB, got %d", len(body))
	require.Equal(t, 856, countLeaves(mustJSON(t, JSONBody(856))))
}

func mustJSON(t *testing.T, b []byte) any {
	t.Helper()
	var doc any
	require.NoError(t, json.Unmarshal(b, &doc))
	return doc
}
