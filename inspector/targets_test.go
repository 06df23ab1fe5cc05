package inspector

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Match.Targets names the variables a rule matched in, as an exclusion
// names them: without repeats, at most MaxMatchTargets, and none whose
// key an exclusion cannot name.
func TestMatchTargets(t *testing.T) {
	rs := testRuleSet(t)
	attack := "1'+union+select+password+from+users--"
	cases := []struct {
		name  string
		query string
		want  []string
	}{
		{"one argument", "comment=" + attack, []string{"ARGS:comment"}},
		{"two arguments", "a=" + attack + "&b=" + attack, []string{"ARGS:a", "ARGS:b"}},
		{"the same argument twice", "a=" + attack + "&a=" + attack, []string{"ARGS:a"}},
		{"bounded", "a=" + attack + "&b=" + attack + "&c=" + attack + "&d=" + attack + "&e=" + attack + "&f=" + attack,
			[]string{"ARGS:a", "ARGS:b", "ARGS:c", "ARGS:d"}},
		{"a key an exclusion cannot name", "a%20b=" + attack, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := rs.Inspect(context.Background(), Request{Method: "GET", URI: "/s?" + tc.query, Host: "h",
				Protocol: "HTTP/1.1", Headers: []Header{{Name: "host", Value: "h"}, {Name: "user-agent", Value: "t"}, {Name: "accept", Value: "*/*"}}}, "")
			require.NoError(t, err)
			found := false
			for _, m := range v.Matches {
				if m.ID == 942100 { // libinjection: one match per argument
					found = true
					require.Equal(t, tc.want, m.Targets)
				}
				for _, tg := range m.Targets {
					require.False(t, strings.Contains(tg, "union"), "a value in %q", tg)
				}
			}
			require.True(t, found, "942100 did not match: %+v", v.RuleIDs())
		})
	}
}
