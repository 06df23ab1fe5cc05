package inspector

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// errorsOf flattens joined errors.
func errorsOf(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, errorsOf(e)...)
		}
		return out
	}
	return []error{err}
}

// TestCompileBadSecLang loads one fixture per failure mode from testdata,
// as AfterCRS and as BeforeCRS of a named extra profile.
func TestCompileBadSecLang(t *testing.T) {
	tests := []struct {
		file    string
		wantErr string
	}{
		{"bad-rule-regex.conf", "error parsing regexp"},
		{"bad-rule-unknown-directive.conf", `unknown directive "secfrobnicate"`},
		{"bad-rule-unknown-operator.conf", "operator frobnicate not found"},
		{"bad-rule-unknown-action.conf", `invalid action "frobnicate"`},
		{"bad-rule-unknown-variable.conf", "unknown variable"},
		{"bad-rule-duplicate-id.conf", "duplicated rule id 942100"},
		{"bad-rule-unterminated.conf", "invalid actions"},
		{"bad-rule-phase.conf", "invalid phase 9"},
		{"bad-remove-by-id.conf", "secruleremovebyid"},
		{"bad-action-transformation.conf", `invalid transformation name "frobnicate"`},
		{"bad-include-missing.conf", "no-such-file.conf"},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "bad-*.conf"))
	require.NoError(t, err)
	var listed []string
	for _, tc := range tests {
		listed = append(listed, filepath.Join("testdata", tc.file))
	}
	require.ElementsMatch(t, files, listed, "every fixture has a row")

	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.file, ".conf"), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			require.NoError(t, err)
			name := "tenant-" + strings.TrimSuffix(tc.file, ".conf")
			for place, p := range map[string]Profile{
				"after":  {Name: name, AfterCRS: string(b)},
				"before": {Name: name, BeforeCRS: string(b)},
			} {
				rs, err := Compile(Profile{}, p)
				require.Error(t, err, place)
				require.Nil(t, rs, place)
				var pe *ProfileError
				require.ErrorAs(t, err, &pe, place)
				require.Equal(t, name, pe.Profile, "%s: the failing profile, not the default one", place)
				require.Contains(t, err.Error(), `profile "`+name+`"`, place)
				require.Contains(t, err.Error(), tc.wantErr, place)
				require.NotContains(t, err.Error(), `profile "default"`, place)
				require.Len(t, errorsOf(err), 1, place)
			}
		})
	}
}

// The regex garbage of the brief, in the default profile itself.
func TestCompileBadDefaultProfile(t *testing.T) {
	rs, err := Compile(Profile{AfterCRS: "SecRuleRemoveById 942100\n" + `SecRule ARGS "@rx (" "id:1"`})
	require.Error(t, err)
	require.Nil(t, rs)
	var pe *ProfileError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, DefaultProfileName, pe.Profile)
	require.True(t, strings.HasPrefix(err.Error(), `profile "default": `), err.Error())
	require.NotNil(t, pe.Unwrap())
}

func TestCompileInvalidProfile(t *testing.T) {
	tests := []struct {
		name    string
		p       Profile
		wantErr []string
	}{
		{"paranoia", Profile{ParanoiaLevel: 7}, []string{"paranoiaLevel", "7"}},
		{"paranoia-negative", Profile{ParanoiaLevel: -1}, []string{"paranoiaLevel"}},
		{"mode", Profile{Mode: "blok"}, []string{"mode", `"blok"`}},
		{"threshold", Profile{InboundAnomalyThreshold: -5}, []string{"inboundAnomalyThreshold"}},
		{"body-limit", Profile{RequestBodyLimit: MaxRequestBodyLimit + 1}, []string{"requestBodyLimit"}},
		{"body-limit-negative", Profile{RequestBodyLimit: -1}, []string{"requestBodyLimit"}},
		{"arguments-limit", Profile{ArgumentsLimit: -1}, []string{"argumentsLimit"}},
		{"deny-status", Profile{DenyStatus: 200}, []string{"denyStatus", "200"}},
		{"deny-status-600", Profile{DenyStatus: 600}, []string{"denyStatus"}},
		{"all-at-once", Profile{ParanoiaLevel: 7, Mode: "blok"}, []string{"paranoiaLevel", "mode"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Name = "tenant-" + tc.name
			// Validation fails before the rules are compiled.
			_, err := Compile(p)
			require.Error(t, err)
			for _, want := range tc.wantErr {
				require.Contains(t, err.Error(), want)
			}
			require.Contains(t, err.Error(), `profile "`+p.Name+`"`)
			var pe *ProfileError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, p.Name, pe.Profile)
			require.Error(t, p.WithDefaults().Validate())
		})
	}

	// A bad extra profile is named; the good default is not.
	_, err := Compile(Profile{}, Profile{Name: "tenant-x", ParanoiaLevel: 7, Mode: "blok"})
	require.Error(t, err)
	var pe *ProfileError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "tenant-x", pe.Profile)
	require.Contains(t, err.Error(), "paranoiaLevel")
	require.Contains(t, err.Error(), "mode")
	require.NotContains(t, err.Error(), `profile "default"`)

	// Both bad profiles are reported, each as its own *ProfileError.
	_, err = Compile(Profile{Name: "a", ParanoiaLevel: 9}, Profile{Name: "b", Mode: "blok"})
	require.Error(t, err)
	var names []string
	for _, e := range errorsOf(err) {
		var pe *ProfileError
		require.True(t, errors.As(e, &pe), "%v", e)
		names = append(names, pe.Profile)
	}
	require.ElementsMatch(t, []string{"a", "b"}, names)

	require.NoError(t, Profile{}.WithDefaults().Validate())
	require.NoError(t, Profile{ParanoiaLevel: 4, Mode: ModeDetect, DenyStatus: 429, RequestBodyLimit: MaxRequestBodyLimit}.WithDefaults().Validate())
}

func TestCompileDuplicateProfileNames(t *testing.T) {
	tests := []struct {
		name  string
		def   Profile
		extra []Profile
		dup   string
	}{
		{"extra-repeats-default", Profile{}, []Profile{{Name: "default"}}, "default"},
		{"unnamed-extra-is-default", Profile{}, []Profile{{}}, "default"},
		{"two-extras", Profile{Name: "a"}, []Profile{{Name: "b"}, {Name: "b", ParanoiaLevel: 2}}, "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Compile(tc.def, tc.extra...)
			require.Error(t, err)
			require.Nil(t, rs)
			var pe *ProfileError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tc.dup, pe.Profile)
			require.Contains(t, err.Error(), "duplicate")
		})
	}
}

// TestProfileDenyStatus: a denial answers the profile's denyStatus, whether
// a CRS rule, one of meshwaf's own rules (200002, whose status Directives
// sets) or a guard decided it.
func TestProfileDenyStatus(t *testing.T) {
	rs := testRuleSet(t)
	tests := []struct {
		name     string
		profile  string
		req      Request
		status   int
		decisive int
	}{
		{"crs-406", profDeny406, get("HTTP/1.1", seedSQLiURI), 406, 949110},
		{"body-error-406", profDeny406, send("POST", "HTTP/1.1", "/api", "application/json", `{"a":`), 406, 200002},
		{"guard-406", profDeny406, get("HTTP/1.1", "/?"+manyArgs(DefaultArgumentsLimit+1, -1)), 406, RuleArgumentsLimit},
		{"crs-default", "", get("HTTP/1.1", seedSQLiURI), DefaultDenyStatus, 949110},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.profile == profDeny406, rs.Profile(tc.profile).DenyStatus == 406)
			v := inspect(t, rs, tc.profile, tc.req)
			require.Equal(t, Deny, v.Decision, "rules %v", v.RuleIDs())
			require.Equal(t, tc.decisive, v.InterruptingRule)
			require.Equal(t, tc.status, v.Status)
		})
	}
}
