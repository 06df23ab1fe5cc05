package extauthz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
)

// TestUndecodedViews: a JSON value of base64 text too long to decode is
// denied by rule 99004, or with allowUndecodedViews let through; either way
// it is counted in meshwaf_undecoded_values_total and the audit line.
func TestUndecodedViews(t *testing.T) {
	allowing, err := inspector.Compile(inspector.Profile{AllowUndecodedViews: true})
	require.NoError(t, err)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2000) // 90 KB
	body := `{"doc":"` + base64.StdEncoding.EncodeToString([]byte(text)) + `"}`
	req := loadAuditFixture(t, "json-password.json")
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Body = body
	h.Size = int64(len(body))
	h.Headers["content-length"] = strconv.Itoa(len(body))

	for _, tc := range []struct {
		name   string
		engine *inspector.RuleSet
		denied bool
	}{
		{"guard", testEngine(t), true},
		{"allowUndecodedViews", allowing, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.engine, nil)
			resp, err := ts.Check(context.Background(), req)
			require.NoError(t, err)
			if tc.denied {
				require.EqualValues(t, 403, resp.GetDeniedResponse().GetStatus().GetCode())
			} else {
				require.NotNil(t, resp.GetOkResponse())
			}
			require.Equal(t, 1.0, testutil.ToFloat64(ts.metrics.undecoded.WithLabelValues(inspector.DefaultProfileName, boundValue)))
			require.Equal(t, 0.0, testutil.ToFloat64(ts.metrics.undecoded.WithLabelValues(inspector.DefaultProfileName, boundBudget)))
			lines := ts.audit.lines()
			require.Len(t, lines, 1)
			var al AuditLine
			require.NoError(t, json.Unmarshal([]byte(lines[0]), &al))
			require.NotNil(t, al.UndecodedViews)
			require.Equal(t, AuditUndecoded{OverValueLimit: 1, Longest: len(body) - len(`{"doc":""}`)}, *al.UndecodedViews)
			ids := make([]int, len(al.Rules))
			for i, r := range al.Rules {
				ids[i] = r.ID
			}
			if tc.denied {
				require.Contains(t, ids, inspector.RuleUndecodedViews)
				require.Equal(t, inspector.RuleUndecodedViews, al.InterruptingRule)
			} else {
				require.Empty(t, ids)
			}
			require.NotContains(t, lines[0], "quick brown", "no value in the audit line")
		})
	}
}

// TestUndecodedViewsDepth: a header value still encoded after the nested
// decodings is denied by rule 99004 and counted under bound "depth" and in
// the audit line's over_depth.
func TestUndecodedViewsDepth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	req := loadAuditFixture(t, "json-password.json")
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Body = `{"user":"ann"}`
	h.Size = int64(len(h.Body))
	h.Headers["content-length"] = strconv.Itoa(len(h.Body))
	h.Headers["x-data"] = b64(b64(b64("' or 1=1--")))

	ts := newTestServer(t, testEngine(t), nil)
	resp, err := ts.Check(context.Background(), req)
	require.NoError(t, err)
	require.EqualValues(t, 403, resp.GetDeniedResponse().GetStatus().GetCode())
	for bound, want := range map[string]float64{boundDepth: 1, boundValue: 0, boundBudget: 0} {
		require.Equal(t, want, testutil.ToFloat64(ts.metrics.undecoded.WithLabelValues(inspector.DefaultProfileName, bound)), bound)
	}
	lines := ts.audit.lines()
	require.Len(t, lines, 1)
	var al AuditLine
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &al))
	require.Equal(t, inspector.RuleUndecodedViews, al.InterruptingRule)
	require.NotNil(t, al.UndecodedViews)
	require.Equal(t, AuditUndecoded{OverDepth: 1}, *al.UndecodedViews)
	require.Contains(t, lines[0], `"over_depth":1`)
}
