package inspector

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const formCTExcl = "application/x-www-form-urlencoded"

var exclProfiles = []Profile{
	{Name: "ex-ids", Exclusions: []Exclusion{{RuleIDs: []int{942190, 942360}}}},
	{Name: "ex-tag", Exclusions: []Exclusion{{Tags: []string{"attack-sqli"}}}},
	{Name: "ex-target", Exclusions: []Exclusion{{Tags: []string{"attack-sqli"}, Targets: []string{"ARGS:password"}}}},
	{Name: "ex-cms", Exclusions: []Exclusion{{Tags: []string{"attack-xss"}, PathPrefix: "/api/cms", Methods: []string{"POST", "PUT"}}}},
	{Name: "ex-path", Exclusions: []Exclusion{{RuleIDs: []int{942190, 942360}, PathPrefix: "/legacy"}}},
	{Name: "ex-pages", Exclusions: []Exclusion{{RuleIDs: []int{942190, 942360}, PathPrefix: "/api/pages"}}},
	{Name: "ex-dir", Exclusions: []Exclusion{{RuleIDs: []int{942190, 942360}, PathPrefix: "/api/pages/"}}},
	{Name: "ex-meta", Exclusions: []Exclusion{{RuleIDs: []int{942190, 942360}, PathPrefix: "/v1.0/a(c)*"}}},
	{Name: "ex-method", Exclusions: []Exclusion{{Tags: []string{"attack-sqli"}, Targets: []string{"ARGS:password"}, Methods: []string{"GET"}}}},
}

var exclOnce struct {
	sync.Once
	rs  *RuleSet
	err error
}

func exclRuleSet(t *testing.T) *RuleSet {
	t.Helper()
	exclOnce.Do(func() { exclOnce.rs, exclOnce.err = Compile(Profile{}, exclProfiles...) })
	require.NoError(t, exclOnce.err)
	return exclOnce.rs
}

func TestStructuredExclusions(t *testing.T) {
	xss := "comment=" + strings.ReplaceAll("<script>alert(document.cookie)</script>", "<", "%3C")
	otherSQLi := "/?q=%27+UNION+SELECT+1%2C+version%28%29+limit+1%2C1--"
	tests := []struct {
		name    string
		profile string
		req     Request
		want    Decision
	}{
		{"default denies the seed", "", get("HTTP/1.1", seedSQLiURI), Deny},
		{"removed by id", "ex-ids", get("HTTP/1.1", seedSQLiURI), Allow},
		{"removed by tag", "ex-tag", get("HTTP/1.1", seedSQLiURI), Allow},
		{"target removed", "ex-target", get("HTTP/1.1", seedSQLiURI), Allow},
		{"other targets still inspected", "ex-target", get("HTTP/1.1", otherSQLi), Deny},
		{"path and method match", "ex-cms", send("POST", "HTTP/1.1", "/api/cms/pages", formCTExcl, xss), Allow},
		{"method does not match", "ex-cms", send("PATCH", "HTTP/1.1", "/api/cms/pages", formCTExcl, xss), Deny},
		{"path does not match", "ex-cms", send("POST", "HTTP/1.1", "/api/users", formCTExcl, xss), Deny},
		{"traversal out of the prefix", "ex-cms", send("POST", "HTTP/1.1", "/api/cms/../users", formCTExcl, xss), Deny},
		{"encoded traversal out of the prefix", "ex-cms", send("POST", "HTTP/1.1", "/api/cms/%2e%2e/users", formCTExcl, xss), Deny},
		{"other attack classes still inspected", "ex-cms", send("POST", "HTTP/1.1", "/api/cms/pages", formCTExcl, "q=%27+UNION+SELECT+1%2C+version%28%29+limit+1%2C1--"), Deny},
		{"path only", "ex-path", get("HTTP/1.1", "/legacy"+seedSQLiURI[1:]), Allow},
		{"path only, elsewhere", "ex-path", get("HTTP/1.1", seedSQLiURI), Deny},
		{"segment: the prefix itself", "ex-pages", get("HTTP/1.1", "/api/pages"+seedSQLiURI[1:]), Allow},
		{"segment: a trailing slash", "ex-pages", get("HTTP/1.1", "/api/pages/"+seedSQLiURI[1:]), Allow},
		{"segment: below it", "ex-pages", get("HTTP/1.1", "/api/pages/x"+seedSQLiURI[1:]), Allow},
		{"segment: encoded slash", "ex-pages", get("HTTP/1.1", "/api/pages%2Fx"+seedSQLiURI[1:]), Allow},
		{"segment: a longer segment", "ex-pages", get("HTTP/1.1", "/api/pagesecret"+seedSQLiURI[1:]), Deny},
		{"segment: a longer segment after a traversal", "ex-pages", get("HTTP/1.1", "/api/pages/../pagesecret"+seedSQLiURI[1:]), Deny},
		{"segment: a path parameter", "ex-pages", get("HTTP/1.1", "/api/pages;x=1"+seedSQLiURI[1:]), Deny},
		{"segment: a dot", "ex-pages", get("HTTP/1.1", "/api/pages.json"+seedSQLiURI[1:]), Deny},
		{"prefix with a slash: below it", "ex-dir", get("HTTP/1.1", "/api/pages/x"+seedSQLiURI[1:]), Allow},
		{"prefix with a slash: not the bare path", "ex-dir", get("HTTP/1.1", "/api/pages"+seedSQLiURI[1:]), Deny},
		{"prefix with a slash: a longer segment", "ex-dir", get("HTTP/1.1", "/api/pagesecret/x"+seedSQLiURI[1:]), Deny},
		{"regexp characters are literal", "ex-meta", get("HTTP/1.1", "/v1.0/a(c)*/x"+seedSQLiURI[1:]), Allow},
		{"regexp characters are literal: '.'", "ex-meta", get("HTTP/1.1", "/v1x0/a(c)*/x"+seedSQLiURI[1:]), Deny},
		{"regexp characters are literal: '*'", "ex-meta", get("HTTP/1.1", "/v1.0/a(c)c/x"+seedSQLiURI[1:]), Deny},
		{"method only", "ex-method", get("HTTP/1.1", seedSQLiURI), Allow},
		{"method only, other method", "ex-method", send("POST", "HTTP/1.1", "/", formCTExcl, "password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--"), Deny},
	}
	rs := exclRuleSet(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := inspect(t, rs, tt.profile, tt.req)
			require.Equal(t, tt.want, v.Decision, "rules %v", v.RuleIDs())
		})
	}
}

func TestExclusionDirectives(t *testing.T) {
	before, after := exclusionDirectives([]Exclusion{
		{RuleIDs: []int{942100, 942200}},
		{Tags: []string{"attack-xss"}, Targets: []string{"ARGS:body"}},
		{RuleIDs: []int{941100}, PathPrefix: "/cms", Methods: []string{"POST", "PUT"}},
	}, nil, nil)
	require.Equal(t, "SecRuleRemoveById 942100 942200\nSecRuleUpdateTargetByTag attack-xss \"!ARGS:body\"\n"+
		"SecRuleUpdateTargetByTag attack-xss \"!ARGS:/^body(?::(?:b64|url2|u|nfkc|html))(?::(?:b64|url2|u|nfkc|html))?$/\"\n", after,
		"an argument's exclusion covers its decoded views (beyond.go)")
	require.Equal(t, `SecRule REQUEST_FILENAME "@rx ^/cms(?:/|$)" "id:99202,phase:1,pass,nolog,t:none,t:urlDecodeUni,t:normalizePath,chain"
  SecRule REQUEST_METHOD "@rx ^(?:POST|PUT)$" "t:none,ctl:ruleRemoveById=941100"
`, before, "methods are matched whole, paths after decoding and normalisation")
}

// TestExclusionNamesPromotedCopy: excluding a promoted CRS rule by its
// own id also excludes the copy corroboration runs in its place.
func TestExclusionNamesPromotedCopy(t *testing.T) {
	before, after := exclusionDirectives([]Exclusion{
		{RuleIDs: []int{942130}},
		{RuleIDs: []int{942130}, Targets: []string{"ARGS:q"}, PathPrefix: "/search"},
	}, ruleCopies(Profile{}), tokenRules(Profile{}))
	require.Contains(t, after, fmt.Sprintf("SecRuleRemoveById 942130 %d\n", FirstPromoted))
	require.Contains(t, before, fmt.Sprintf("ctl:ruleRemoveTargetById=%d;ARGS:q", FirstPromoted))
	attack := get("HTTP/1.1", "/api/v1/search?note="+qesc("or 0=0 #")+"&page=1")
	rs, err := Compile(Profile{}, Profile{Name: "no-942130", Exclusions: []Exclusion{{RuleIDs: []int{942130}}}})
	require.NoError(t, err)
	defer rs.Close()
	require.Equal(t, Deny, inspect(t, rs, "", attack).Decision, "the copy of 942130 denies it")
	v := inspect(t, rs, "no-942130", attack)
	require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
}

func TestExclusionErrors(t *testing.T) {
	tests := []struct {
		name string
		ex   Exclusion
		want []string
	}{
		{"unknown rule id", Exclusion{RuleIDs: []int{942190, 123456}}, []string{"exclusions[0].ruleIds: rule 123456 does not exist"}},
		{"unknown tag", Exclusion{Tags: []string{"attack-nosuch"}}, []string{`exclusions[0].tags: no rule has tag "attack-nosuch"`}},
		{"nothing named", Exclusion{PathPrefix: "/x"}, []string{"exclusions[0].ruleIds: an exclusion needs ruleIds or tags"}},
		{"bad fields", Exclusion{RuleIDs: []int{-1}, Tags: []string{"a b"}, Targets: []string{"ARGS:x\""}, PathPrefix: "x\"", Methods: []string{"get"}},
			[]string{"exclusions[0].ruleIds: -1", `exclusions[0].tags: "a b"`, "exclusions[0].targets:", "exclusions[0].pathPrefix:", `exclusions[0].methods: "get"`}},
		// The prefix is compared after t:urlDecodeUni and t:normalizePath:
		// one that is not decoded or not normal can never match.
		{"pathPrefix with +", Exclusion{RuleIDs: []int{942100}, PathPrefix: "/search+results"}, []string{`exclusions[0].pathPrefix: "/search+results" is compared with the URL-decoded path`}},
		{"pathPrefix percent-encoded", Exclusion{RuleIDs: []int{942100}, PathPrefix: "/api/caf%C3%A9"}, []string{`exclusions[0].pathPrefix: "/api/caf%C3%A9" is compared with the URL-decoded path`}},
		{"pathPrefix not normalised", Exclusion{RuleIDs: []int{942100}, PathPrefix: "/api//pages"}, []string{`exclusions[0].pathPrefix: "/api//pages" is compared with the normalised path`}},
		{"pathPrefix with dot segment", Exclusion{RuleIDs: []int{942100}, PathPrefix: "/api/./pages/"}, []string{`exclusions[0].pathPrefix: "/api/./pages/" is compared with the normalised path`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(Profile{Name: "p", Exclusions: []Exclusion{tt.ex}})
			require.Error(t, err)
			var pe *ProfileError
			require.True(t, errors.As(err, &pe))
			require.Equal(t, "p", pe.Profile)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestProfileNameValidation(t *testing.T) {
	for _, name := range []string{"bad name", "a/b", strings.Repeat("x", 64), "-x"} {
		_, err := Compile(Profile{Name: name})
		require.ErrorContains(t, err, "name:", name)
	}
}

// TestExclusionNamesTokenCorroboration: a target exclusion of 930120
// covers the rule that adds back its held score, so a single-token file
// name in the excluded argument does not score 930120's match elsewhere.
func TestExclusionNamesTokenCorroboration(t *testing.T) {
	req := get("HTTP/1.1", "/api/v1/files?note="+qesc("Edit /etc/fstab to mount the disk.")+"&path="+qesc("/etc/passwd"))
	tests := []struct {
		name string
		ex   Exclusion
	}{
		{"static", Exclusion{RuleIDs: []int{930120, 932160}, Targets: []string{"ARGS:path"}}},
		{"runtime", Exclusion{RuleIDs: []int{930120, 932160}, Targets: []string{"ARGS:path"}, PathPrefix: "/api/v1/files"}},
		{"static-tag", Exclusion{Tags: []string{"attack-lfi", "attack-rce"}, Targets: []string{"ARGS:path"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Compile(Profile{}, Profile{Name: "excluded", Exclusions: []Exclusion{tc.ex}})
			require.NoError(t, err)
			defer rs.Close()
			v := inspect(t, rs, "", req)
			require.Equal(t, Deny, v.Decision, "rules %v", v.RuleIDs())
			require.Contains(t, v.RuleIDs(), CorroborationToken)
			v = inspect(t, rs, "excluded", req)
			require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
			require.Contains(t, v.RuleIDs(), 930120, "930120 still reads note")
		})
	}
}

// TestExclusionChainCtlOnlyWhenNeeded: a static target exclusion gets a
// runtime ctl action only when it names a token rule, by id or by one of
// its tags; others stay configure-time directives with no per-request cost.
func TestExclusionChainCtlOnlyWhenNeeded(t *testing.T) {
	chained := tokenRules(Profile{})
	require.Contains(t, chained[CorroborationToken], "attack-lfi")
	_, after := exclusionDirectives([]Exclusion{
		{Tags: []string{"attack-xss"}, Targets: []string{"ARGS:a"}},
		{RuleIDs: []int{942100}, Targets: []string{"ARGS:b"}},
		{Tags: []string{"attack-lfi", "attack-xss"}, Targets: []string{"ARGS:c"}},
		{RuleIDs: []int{930120}, Targets: []string{"ARGS:d"}},
	}, ruleCopies(Profile{}), chained)
	require.NotContains(t, after, fmt.Sprintf("id:%d,", exclusionRuleBase))
	require.NotContains(t, after, fmt.Sprintf("id:%d,", exclusionRuleBase+1))
	require.Contains(t, after, fmt.Sprintf("SecAction \"id:%d,phase:1,pass,nolog,t:none,ctl:ruleRemoveTargetByTag=attack-lfi;ARGS:c", exclusionRuleBase+2))
	require.NotContains(t, after, "ctl:ruleRemoveTargetByTag=attack-xss")
	require.Contains(t, after, fmt.Sprintf("SecAction \"id:%d,phase:1,pass,nolog,t:none,ctl:ruleRemoveTargetById=%d;ARGS:d", exclusionRuleBase+3, CorroborationToken))
}
