package inspector_test

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/inspector/rulepack"
)

// detRuns is how many times each request of TestDeterministicVerdicts runs.
const detRuns = 300

// detProfiles are the profiles TestDeterministicVerdicts checks, each with
// pre-selection on and off: CRS in detect mode (every rule runs, the
// score is CRS's full sum); the reduced two-rule case after CRS; a
// profile rule before CRS that reads every cookie with 921250's
// transformations (CRS alone has no phase-1 rule before 921250 that does).
func detProfiles() []inspector.Profile {
	off := false
	twoRules := `SecRule MULTIPART_PART_HEADERS "@rx ^nothing-matches-this$" "id:10020,phase:2,pass,nolog,t:none,t:lowercase"
SecRule MULTIPART_PART_HEADERS "@contains content-type: text/plain" "id:10021,phase:2,pass,log,msg:'part header',t:none,t:lowercase"`
	cookieRule := `SecRule REQUEST_COOKIES "@rx ^nothing-matches-this$" "id:10022,phase:1,pass,nolog,t:none,t:lowercase"`
	return []inspector.Profile{
		{Name: "cookierule", Mode: inspector.ModeDetect, BeforeCRS: cookieRule},
		{Name: "cookierule-nopre", Mode: inspector.ModeDetect, BeforeCRS: cookieRule, Preselect: &off},
		{Name: "detect", Mode: inspector.ModeDetect},
		{Name: "detect-nopre", Mode: inspector.ModeDetect, Preselect: &off},
		{Name: "tworules", Mode: inspector.ModeDetect, AfterCRS: twoRules},
		{Name: "tworules-nopre", Mode: inspector.ModeDetect, AfterCRS: twoRules, Preselect: &off},
	}
}

const detBoundary = "----meshwafDeterminism"

// detMultipart is a multipart body of parts, each its header lines and
// content.
func detMultipart(parts ...[2]string) []byte {
	var b []byte
	for _, p := range parts {
		b = fmt.Appendf(b, "--%s\r\n%s\r\n\r\n%s\r\n", detBoundary, p[0], p[1])
	}
	return fmt.Appendf(b, "--%s--\r\n", detBoundary)
}

// TestDeterministicVerdicts runs requests whose verdict stock Coraza 3.8.1
// gets right only in some runs (its transformation cache, see
// internal/distinctkeys) many times each: meshwaf must give the same
// verdict, matched rules and score every time.
func TestDeterministicVerdicts(t *testing.T) {
	rs, err := inspector.Compile(inspector.Profile{}, detProfiles()...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rs.Close() })

	post := func(body []byte, headers ...inspector.Header) inspector.Request {
		return inspector.Request{
			Method: "POST", URI: "/upload", Protocol: "HTTP/1.1", Host: "shop.example",
			Headers: append([]inspector.Header{
				{Name: "Host", Value: "shop.example"},
				{Name: "User-Agent", Value: "determinism-test/1.0"},
				{Name: "Accept", Value: "*/*"},
				{Name: "Content-Type", Value: "multipart/form-data; boundary=" + detBoundary},
			}, headers...),
			Body: body,
		}
	}
	fileName := detMultipart(
		[2]string{`Content-Disposition: form-data; name="title"`, "report"},
		[2]string{"Content-Disposition: form-data; name=\"file\"; filename=\"c:/../../etc/passwd<script>alert(1)</script>.txt\"\r\nContent-Type: text/plain", "hello"},
		[2]string{`Content-Disposition: form-data; name="note"`, "fine"},
	)
	cases := []struct {
		name     string
		req      inspector.Request
		profiles []string
		want     int // a rule every run must match (0: none required)
	}{
		{"multipart payload in file name", post(fileName), []string{"detect", "detect-nopre"}, 922130},
		{"two rules on part headers", post(fileName), []string{"tworules", "tworules-nopre"}, 10021},
		{"repeated form field", inspector.Request{
			Method: "POST", URI: "/form", Protocol: "HTTP/1.1", Host: "shop.example",
			Headers: []inspector.Header{
				{Name: "Host", Value: "shop.example"},
				{Name: "User-Agent", Value: "determinism-test/1.0"},
				{Name: "Accept", Value: "*/*"},
				{Name: "Content-Type", Value: "application/x-www-form-urlencoded"},
			},
			Body: []byte("q=decoy&q=%3Cscript%3Ealert(1)%3C%2Fscript%3E&a=1&b=2"),
		}, []string{"detect", "detect-nopre"}, 941160},
		{"old cookies $Version", inspector.Request{
			Method: "GET", URI: "/", Protocol: "HTTP/1.1", Host: "shop.example",
			Headers: []inspector.Header{
				{Name: "Host", Value: "shop.example"},
				{Name: "User-Agent", Value: "determinism-test/1.0"},
				{Name: "Accept", Value: "*/*"},
				{Name: "Cookie", Value: `sid=AbC; $Version=X; theme=dark; $Version=1; lang=en`},
			},
		}, []string{"detect", "detect-nopre", "cookierule", "cookierule-nopre"}, 921250},
	}
	for _, c := range cases {
		for _, prof := range c.profiles {
			t.Run(c.name+"/"+prof, func(t *testing.T) {
				runs := detRuns
				if inspector.RaceEnabled {
					runs = detRuns / 10 // the race detector makes a check about ten times slower
				}
				var first inspector.Verdict
				for i := range runs {
					v, err := rs.Inspect(context.Background(), c.req, prof)
					require.NoError(t, err)
					if i == 0 {
						first = v
						if c.want != 0 {
							require.Contains(t, v.RuleIDs(), c.want, "rule %d did not match", c.want)
						}
						continue
					}
					require.Equal(t, first.Decision, v.Decision, "run %d: decision", i)
					require.Equal(t, first.AnomalyScore, v.AnomalyScore, "run %d: anomaly score", i)
					require.Equal(t, first.InterruptingRule, v.InterruptingRule, "run %d: interrupting rule", i)
					require.Equal(t, first.RuleIDs(), v.RuleIDs(), "run %d: matched rules", i)
					require.True(t, slices.EqualFunc(first.Matches, v.Matches, func(a, b inspector.Match) bool { return a.ID == b.ID && a.Msg == b.Msg }),
						"run %d: matches %v vs %v", i, first.Matches, v.Matches)
				}
			})
		}
	}
}

// phaseVariables are the variables Coraza changes while a phase runs (TX
// aside: Coraza does not cache its transformations): distinctkeys cannot
// make their cache entries right, so no shipped rule may read them with a
// transformation.
var phaseVariables = []string{"MATCHED_VAR", "MATCHED_VARS", "MATCHED_VAR_NAME", "MATCHED_VARS_NAMES",
	"RULE", "HIGHEST_SEVERITY", "REQBODY_PROCESSOR", "DURATION", "ENV"}

// TestNoTransformedPhaseVariables: no CRS request rule and no rule pack
// rule (chained rules included) reads a variable of phaseVariables with a
// transformation, and CRS's default actions add none.
func TestNoTransformedPhaseVariables(t *testing.T) {
	files, err := fs.Glob(coreruleset.FS, "@owasp_crs/REQUEST-*.conf")
	require.NoError(t, err)
	texts := []string{rulepack.SecLang()}
	for _, f := range append(files, "@crs-setup.conf.example") {
		b, err := fs.ReadFile(coreruleset.FS, f)
		require.NoError(t, err)
		texts = append(texts, string(b))
	}
	rule := regexp.MustCompile(`^\s*SecRule\s+(\S+)\s+"(?:[^"\\]|\\.)*"\s+"(.*)"\s*$`)
	transform := regexp.MustCompile(`(?:^|,)\s*t:(\w+)`)
	rules, phaseReads := 0, 0
	for _, text := range texts {
		for _, line := range strings.Split(regexp.MustCompile(`\\\r?\n`).ReplaceAllString(text, " "), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "SecDefaultAction") {
				require.NotRegexp(t, transform, line, "a default action adds transformations")
			}
			m := rule.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			rules++
			var ts []string
			for _, tm := range transform.FindAllStringSubmatch(m[2], -1) {
				if tm[1] == "none" {
					ts = ts[:0]
					continue
				}
				ts = append(ts, tm[1])
			}
			for _, v := range strings.Split(m[1], "|") {
				name, _, _ := strings.Cut(strings.TrimLeft(v, "!&"), ":")
				if slices.Contains(phaseVariables, strings.ToUpper(name)) {
					phaseReads++
					require.Empty(t, ts, "a rule reads %s with transformations: %s", name, strings.TrimSpace(line))
				}
			}
		}
	}
	require.Greater(t, rules, 500, "SecRules read")
	require.GreaterOrEqual(t, phaseReads, 10, "rules reading MATCHED_VAR(S) and the like: the check tests nothing")
}
