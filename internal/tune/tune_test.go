package tune

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
)

func line(t *testing.T, profile, method, path string, rules ...extauthz.AuditRule) string {
	t.Helper()
	b, err := json.Marshal(extauthz.AuditLine{LogType: extauthz.AuditLogType, RequestID: "r", Method: method, Host: "h",
		Path: path, Decision: inspector.Detect, Profile: profile, Rules: rules})
	require.NoError(t, err)
	return string(b)
}

var score = extauthz.AuditRule{ID: 949110, Tags: []string{"anomaly-evaluation"}, Targets: []string{"TX:blocking_inbound_anomaly_score"}}

func rule(id int, targets ...string) extauthz.AuditRule {
	return extauthz.AuditRule{ID: id, Msg: "m", Targets: targets}
}

func TestPropose(t *testing.T) {
	cases := []struct {
		name           string
		lines          []string
		opts           Options
		want           []inspector.Exclusion
		wantUnproposed map[int]int
		wantSkipped    int
	}{
		{"one group, methods merged, path normalised",
			[]string{
				line(t, "default", "get", "/a/b/?q=[redacted 3 bytes]", rule(942190, "ARGS:q"), score),
				line(t, "default", "POST", "/a//b", rule(942190, "ARGS:q"), score),
				line(t, "default", "GET", "/a/%62", rule(942190, "ARGS:q")),
			}, Options{},
			[]inspector.Exclusion{{RuleIDs: []int{942190}, Targets: []string{"ARGS:q"}, PathPrefix: "/a/b", Methods: []string{"GET", "POST"}}},
			map[int]int{}, 0},
		{"a group per variable, not a collection's whole",
			[]string{line(t, "default", "GET", "/a", rule(942100, "ARGS:x", "ARGS:y", "TX:foo"))}, Options{},
			[]inspector.Exclusion{
				{RuleIDs: []int{942100}, Targets: []string{"ARGS:x"}, PathPrefix: "/a", Methods: []string{"GET"}},
				{RuleIDs: []int{942100}, Targets: []string{"ARGS:y"}, PathPrefix: "/a", Methods: []string{"GET"}},
			}, map[int]int{}, 0},
		{"nothing to name",
			[]string{
				line(t, "default", "GET", "/a", rule(980170), rule(920100, "TX:x")),
				line(t, "default", "GET", "/"+strings.Repeat("p", 10)+"…", rule(942100, "ARGS:x")),
				line(t, "default", "G ET", "/a", rule(942101, "ARGS:x")),
			}, Options{}, nil, map[int]int{980170: 1, 920100: 1, 942100: 1, 942101: 1}, 0},
		{"filters",
			[]string{
				line(t, "default", "GET", "/a", rule(1, "ARGS:x")),
				line(t, "api", "GET", "/a", rule(2, "ARGS:x")),
				line(t, "api", "GET", "/a", rule(2, "ARGS:x")),
				line(t, "api", "GET", "/a", rule(3, "ARGS:x")),
			}, Options{Profile: "api", MinCount: 2},
			[]inspector.Exclusion{{RuleIDs: []int{2}, Targets: []string{"ARGS:x"}, PathPrefix: "/a", Methods: []string{"GET"}}},
			map[int]int{}, 1},
		{"other lines skipped",
			[]string{`{"msg":"serving"}`, "not json", `{"log_type":"audit","rules":"x"}`, strings.Repeat("x", MaxLine+10),
				line(t, "default", "GET", "/a", rule(1, "ARGS:x"))},
			Options{},
			[]inspector.Exclusion{{RuleIDs: []int{1}, Targets: []string{"ARGS:x"}, PathPrefix: "/a", Methods: []string{"GET"}}},
			map[int]int{}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Propose(strings.NewReader(strings.Join(tc.lines, "\n")), tc.opts)
			require.NoError(t, err)
			var got []inspector.Exclusion
			for _, p := range rep.Proposals {
				got = append(got, p.Exclusion)
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.wantUnproposed, rep.Unproposed)
			require.Equal(t, tc.wantSkipped, rep.Skipped)
			require.Equal(t, len(tc.lines), rep.Lines)
		})
	}
}

// A log written with auditRawValues: the example masks the values again.
func TestExampleMasksRawValues(t *testing.T) {
	l := line(t, "default", "GET", "/a?token=s3cr3t&q=union+select", rule(942100, "ARGS:q"))
	rep, err := Propose(strings.NewReader(l), Options{})
	require.NoError(t, err)
	require.Len(t, rep.Proposals, 1)
	require.Equal(t, "GET /a?token=[redacted 6 bytes]&q=[redacted 12 bytes] (host h, request id r)", rep.Proposals[0].Example)
	var out bytes.Buffer
	require.NoError(t, Write(&out, rep))
	require.NotContains(t, out.String(), "s3cr3t")
}

func TestWriteEmpty(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, Write(&out, Report{MinCount: 1, Unproposed: map[int]int{}}))
	require.Equal(t, "# meshwaf tune: 0 exclusions from 0 lines (0 audit lines with findings, 0 skipped; min count 1).\n"+
		"# Each takes one rule off one variable on one path for the methods seen. Confirm a proposal\n"+
		"# with meshwaf inspect, then merge it into that profile's exclusions in your config.\n{}\n", out.String())
}
