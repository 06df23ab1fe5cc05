package inspector

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDisagreement(t *testing.T) {
	m := func(ids ...int) []Match {
		var out []Match
		for _, id := range ids {
			out = append(out, Match{ID: id, Msg: "m"})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		a, b Verdict
		want []int
	}{
		{"same", Verdict{Decision: Deny, Matches: m(942100)}, Verdict{Decision: Deny, Matches: m(942100)}, nil},
		{"rule only in full", Verdict{Decision: Allow}, Verdict{Decision: Deny, Matches: m(942100, 949110)}, []int{942100, 949110}},
		{"rule only in preselected", Verdict{Matches: m(1, 2)}, Verdict{Matches: m(1)}, []int{2}},
		{"score only", Verdict{AnomalyScore: 5, Matches: m(1)}, Verdict{AnomalyScore: 10, Matches: m(1)}, []int{1}},
		{"status, no rules", Verdict{Status: 403}, Verdict{Status: 406}, []int{0}},
		{"message", Verdict{Matches: []Match{{ID: 1, Msg: "a"}}}, Verdict{Matches: []Match{{ID: 1, Msg: "b"}}}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, disagreement(tc.a, tc.b))
		})
	}
}

// TestPreselectSwitch: pre-selection runs by default and removes rules
// from an ordinary GET; preselect: false and SecLang that rewrites rules
// behind the observer's back (rule updates) turn it off.
func TestPreselectSwitch(t *testing.T) {
	off := false
	rs, err := Compile(Profile{}, Profile{Name: "off", Preselect: &off},
		Profile{Name: "update", AfterCRS: `SecRuleUpdateTargetById 942100 "ARGS:extra"`},
		Profile{Name: "action", AfterCRS: `SecRuleUpdateActionById 942100 "t:none,t:lowercase"`},
		Profile{Name: "narrow", AfterCRS: "SecRuleRemoveById 920350\nSecRuleUpdateTargetById 942100 \"!ARGS:q|!REQUEST_COOKIES:sid\""})
	require.NoError(t, err)
	get := Request{Method: "GET", URI: "/api/v1/items?id=42", Protocol: "HTTP/1.1", Host: "svc",
		Headers: []Header{{Name: "User-Agent", Value: "curl/8.0"}, {Name: "Accept", Value: "*/*"}}}
	v, err := rs.Inspect(context.Background(), get, "")
	require.NoError(t, err)
	require.Greater(t, v.Preselect.Removed, 100, "a Coraza upgrade may have broken the transaction assertions: pre-selection removed %d rules", v.Preselect.Removed)
	require.LessOrEqual(t, v.Preselect.Removed, v.Preselect.Candidates)
	require.LessOrEqual(t, v.Preselect.Candidates, v.Preselect.Rules)
	for _, name := range []string{"off", "update", "action"} {
		v, err := rs.Inspect(context.Background(), get, name)
		require.NoError(t, err)
		require.Equal(t, PreselectStats{}, v.Preselect, name)
	}
	require.Equal(t, []string{"action", "off", "update"}, rs.PreselectOff())
	v, err = rs.Inspect(context.Background(), get, "narrow")
	require.NoError(t, err)
	require.Greater(t, v.Preselect.Removed, 100, "removing targets keeps pre-selection on")
}

func TestOnlyNarrows(t *testing.T) {
	for line, want := range map[string]bool{
		`SecRuleRemoveById 920350`:                        true,
		`SecAction "id:1,phase:1,pass,nolog"`:             true,
		`SecRuleUpdateTargetById 942100 "!ARGS:q"`:        true,
		`SecRuleUpdateTargetById 942100 !ARGS:q|!ARGS:r`:  true,
		`SecRuleUpdateTargetByTag attack-sqli "!ARGS:q"`:  true,
		`SecRuleUpdateTargetById 942100 "ARGS:q"`:         false,
		`SecRuleUpdateTargetById 942100 "!ARGS:q|ARGS:r"`: false,
		`SecRuleUpdateTargetById 942100 "!ARGS:q" \`:      false,
		`secruleupdateactionbyid 942100 "t:none"`:         false,
		`SecRuleUpdateTargetById 942100 "!ARGS:a b"`:      false,
	} {
		require.Equal(t, want, onlyNarrows(line), line)
	}
}

// TestPreselectCanary: every check of a profile with preselectCanary 1 is
// also evaluated in full, and the two agree.
func TestPreselectCanary(t *testing.T) {
	rs, err := Compile(Profile{PreselectCanary: 1})
	require.NoError(t, err)
	for _, tc := range cases() {
		if tc.profile != "" {
			continue
		}
		v, err := rs.Inspect(context.Background(), tc.req, "")
		require.NoError(t, err)
		require.True(t, v.Preselect.Canary, tc.name)
		require.Empty(t, v.Preselect.Disagreement, tc.name)
		require.Equal(t, tc.want, v.Decision, tc.name)
	}
	_, err = Compile(Profile{PreselectCanary: -1})
	require.ErrorContains(t, err, "preselectCanary")
}

// TestPreselectAnalysesDetectionLevel: the paranoia-level-2 rules that
// corroboration runs in the default profile are analysed (and so removed
// when they cannot match), while those of a level no profile runs stay
// ignored, as CRS's gates skip them, and so do the paranoia-level-2 rules
// corroboration removes.
func TestPreselectAnalysesDetectionLevel(t *testing.T) {
	rs := testRuleSet(t)
	kept := PreselectKept(rs, "")
	for _, id := range append(slices.Clone(directPL2), corroboratingPL2...) {
		require.NotContains(t, kept, id, "selected paranoia-level-2 rule %d is analysed", id)
	}
	require.Equal(t, "ignored", kept[942421], "paranoia-level-4 rule 942421 is not analysed at detection level 2")
	removed := corroborationRemoved(Profile{})
	require.Contains(t, removed, 942430, "corroboration removes the unselected paranoia-level-2 rules")
	for _, id := range removed {
		require.Equal(t, "ignored", kept[id], "paranoia-level-2 rule %d, removed by corroboration, is not analysed", id)
	}
	crsOnly := PreselectKept(rs, profCRSOnly)
	for _, id := range directPL2 {
		require.Equal(t, "ignored", crsOnly[id], "without corroboration, paranoia-level-2 rule %d is above the level", id)
	}
}
