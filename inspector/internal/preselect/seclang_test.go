package preselect

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/corazawaf/coraza/v3/types/variables"
	"github.com/stretchr/testify/require"
)

// parsed is what a table row expects of parseSecRule.
type parsed struct {
	vars       []ruleVar
	op, opArg  string
	negated    bool
	trans      []string
	multiMatch bool
	skip       int
}

func parsedOf(r secRule) parsed {
	return parsed{vars: r.vars, op: r.op, opArg: r.opArg, negated: r.negated, trans: r.trans,
		multiMatch: r.multiMatch, skip: r.skip}
}

// seclangCases are rule texts that are easy to misread; want nil: the
// parser must refuse the text (the rule is then kept).
var seclangCases = []struct {
	name string
	raw  string
	want *parsed
}{
	{
		name: "plain",
		raw:  `SecRule ARGS "@rx ^a" "id:1,phase:2,pass,t:none,t:lowercase"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "^a", trans: []string{"lowercase"}},
	},
	{
		name: "quoted action values with commas",
		raw:  `SecRule ARGS "@contains a,b" "id:2,phase:2,pass,msg:'a,b,c',logdata:'x, y',t:none,t:urlDecodeUni"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "contains", opArg: "a,b", trans: []string{"urlDecodeUni"}},
	},
	{
		name: "escaped quotes in the operator",
		raw:  `SecRule ARGS "@contains a\"b" "id:3,phase:2,pass,t:none"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "contains", opArg: `a"b`},
	},
	{
		name: "t: inside msg quotes without a comma before it",
		raw:  `SecRule ARGS "@rx a" "id:4,phase:2,pass,msg:'see t:lowercase',t:none,t:removeNulls"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "a", trans: []string{"removeNulls"}},
	},
	{
		name: "t: after a comma inside msg quotes is refused",
		raw:  `SecRule ARGS "@rx a" "id:5,phase:2,pass,msg:'a, t:lowercase',t:none"`,
	},
	{
		name: "transformations before t:none are dropped",
		raw:  `SecRule ARGS "@rx a" "id:6,phase:2,pass,t:lowercase,t:none,t:cmdLine,t:length"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "a", trans: []string{"cmdLine", "length"}},
	},
	{
		name: "quoted transformation",
		raw:  `SecRule ARGS "@rx a" "id:7,phase:2,pass,t:'none',t:'lowercase'"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "a", trans: []string{"lowercase"}},
	},
	{
		name: "multiMatch",
		raw:  `SecRule ARGS "@rx a" "id:8,phase:2,pass,t:none,t:lowercase,multiMatch"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "a", trans: []string{"lowercase"}, multiMatch: true},
	},
	{
		name: "skip",
		raw:  `SecRule REQUEST_METHOD "@streq GET" "id:9,phase:1,pass,skip:2"`,
		want: &parsed{vars: []ruleVar{{name: "REQUEST_METHOD"}}, op: "streq", opArg: "GET", skip: 2},
	},
	{
		name: "bad skip is refused",
		raw:  `SecRule REQUEST_METHOD "@streq GET" "id:10,phase:1,pass,skip:x"`,
	},
	{
		name: "XPath keys",
		raw:  `SecRule XML:/*|XML://@* "@rx a" "id:11,phase:2,pass,t:none"`,
		want: &parsed{vars: []ruleVar{{name: "XML", key: "/*"}, {name: "XML", key: "//@*"}}, op: "rx", opArg: "a"},
	},
	{
		name: "regex keys with escaped slashes",
		raw:  `SecRule ARGS:/^a\/b$/|REQUEST_COOKIES:/^__utm/ "@rx a" "id:12,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS", key: `^a\/b$`, keyRx: true}, {name: "REQUEST_COOKIES", key: "^__utm", keyRx: true}}, op: "rx", opArg: "a"},
	},
	{
		name: "quoted keys are refused",
		raw:  `SecRule ARGS:'/^a$/' "@rx a" "id:13,phase:2,pass"`,
	},
	{
		name: "negated and counted variables",
		raw:  `SecRule &ARGS|REQUEST_HEADERS|!REQUEST_HEADERS:User-Agent|!ARGS:/^x/ "@eq 0" "id:14,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS", count: true}, {name: "REQUEST_HEADERS"},
			{name: "REQUEST_HEADERS", key: "User-Agent", exclude: true}, {name: "ARGS", key: "^x", keyRx: true, exclude: true}},
			op: "eq", opArg: "0"},
	},
	{
		name: "implicit @rx",
		raw:  `SecRule REQUEST_URI "^/a b" "id:15,phase:1,pass"`,
		want: &parsed{vars: []ruleVar{{name: "REQUEST_URI"}}, op: "rx", opArg: "^/a b"},
	},
	{
		name: "negated operator",
		raw:  `SecRule REQUEST_URI "!@pm a b" "id:16,phase:1,pass"`,
		want: &parsed{vars: []ruleVar{{name: "REQUEST_URI"}}, op: "pm", opArg: "a b", negated: true},
	},
	{
		name: "negated implicit @rx",
		raw:  `SecRule REQUEST_URI "!^/a" "id:17,phase:1,pass"`,
		want: &parsed{vars: []ruleVar{{name: "REQUEST_URI"}}, op: "rx", opArg: "^/a", negated: true},
	},
	{
		name: "operator without argument",
		raw:  `SecRule ARGS "@detectSQLi" "id:18,phase:2,pass,t:none,t:utf8toUnicode,t:urlDecodeUni,t:removeNulls,multiMatch"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "detectSQLi", trans: []string{"utf8toUnicode", "urlDecodeUni", "removeNulls"}, multiMatch: true},
	},
	{
		name: "lower-case variable names",
		raw:  `SecRule args:Foo|request_headers:Host "@rx a" "id:19,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS", key: "Foo"}, {name: "REQUEST_HEADERS", key: "Host"}}, op: "rx", opArg: "a"},
	},
	{
		name: "SecAction is not a SecRule",
		raw:  `SecAction "id:20,phase:1,pass,nolog"`,
	},
	{
		// Coraza clears the chain only for t:none spelt so; t:NONE is the
		// identity transformation (the rule is then not modelled). Read as
		// t:none, the rule was analysed without t:lowercase.
		name: "t:NONE is not t:none",
		raw:  `SecRule ARGS "@contains abc" "id:22,phase:2,pass,t:lowercase,t:NONE,t:urlDecode"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "contains", opArg: "abc", trans: []string{"lowercase", "NONE", "urlDecode"}},
	},
	{
		// Coraza starts a regex key at a '/' inside a key: this is
		// REQUEST_HEADERS:/a/ (every header whose name contains a).
		name: "a / inside a key is refused",
		raw:  `SecRule REQUEST_HEADERS:a/b "@rx a" "id:23,phase:1,pass"`,
	},
	{
		// Coraza reads this as one variable, ARGS:/ab|ARGS:/.
		name: "a / inside a key before another variable is refused",
		raw:  `SecRule ARGS:a/b|ARGS:c "@rx a" "id:24,phase:2,pass"`,
	},
	{
		// Only XML in upper case starts an XPath; Coraza reads xml:/* as
		// a regex key matching every key.
		name: "lower-case xml:/* is refused",
		raw:  `SecRule xml:/* "@rx a" "id:25,phase:2,pass"`,
	},
	{
		name: "lower-case xml with a regex key",
		raw:  `SecRule xml:/a/ "@rx a" "id:26,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "XML", key: "a", keyRx: true}}, op: "rx", opArg: "a"},
	},
	{
		// Coraza drops the last '/' of the last variable: XML:/*.
		name: "an XPath ending in / is refused",
		raw:  `SecRule XML:/*/ "@rx a" "id:27,phase:2,pass"`,
	},
	{
		name: "escaped backslash before an escaped quote",
		raw:  `SecRule ARGS "@contains a\\\"b" "id:28,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "contains", opArg: `a\\"b`},
	},
	{
		name: "a lone ! is a negated empty @rx",
		raw:  `SecRule ARGS "!" "id:29,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", negated: true},
	},
	{
		name: "an operator after spaces is an @rx argument",
		raw:  `SecRule ARGS "  @rx a" "id:30,phase:2,pass"`,
		want: &parsed{vars: []ruleVar{{name: "ARGS"}}, op: "rx", opArg: "@rx a"},
	},
	{
		name: "a text holding two rules is refused",
		raw:  "SecRule ARGS \"@rx a\" \"id:21,phase:2,pass,chain\" \n SecRule ARGS \"@rx b\" \"t:none\"",
	},
}

// TestParseSecRule checks the fields parseSecRule reads from tricky rule
// texts, and that wherever it reads one Coraza also accepts, Coraza's
// compiled rule agrees.
func TestParseSecRule(t *testing.T) {
	for _, tc := range seclangCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseSecRule(tc.raw)
			if tc.want == nil {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, *tc.want, parsedOf(r))
			md, err := compileOne(tc.raw)
			require.NoError(t, err, "Coraza refuses the text")
			requireAgrees(t, r, md)
		})
	}
}

// compileOne compiles one rule text and returns what the rule observer
// reports for its first rule.
func compileOne(raw string) (types.RuleMetadata, error) {
	var md types.RuleMetadata
	// An empty file system: no operator reads a file of this machine.
	cfg := coraza.NewWAFConfig().WithRootFS(fstest.MapFS{}).WithDirectives(raw)
	cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) {
		if md == nil {
			md = r
		}
	})
	_, err := coraza.NewWAF(cfg)
	return md, err
}

// requireAgrees: what parseSecRule read of md's text is what Coraza
// compiled: the operator (name, argument, negation), the targets other than
// exclusions in order (variable, key, regex key, count), the
// transformations (by the function Coraza runs) and multiMatch.
func requireAgrees(t testing.TB, r secRule, md types.RuleMetadata) {
	t.Helper()
	c := inspectRule(t, md)
	op := "@" + r.op
	if r.negated {
		op = "!" + op
	}
	if !strings.HasPrefix(c.op, "!@") && !strings.HasPrefix(c.op, "@") {
		t.Fatalf("rule %d: Coraza's operator %q", md.ID(), c.op)
	}
	require.Equal(t, c.op, op, "rule %d: operator", md.ID())
	require.Equal(t, c.negated, r.negated, "rule %d: negation", md.ID())
	require.Equal(t, c.opArg, r.opArg, "rule %d: operator argument", md.ID())

	var targets []ruleVar
	for _, v := range r.vars {
		if !v.exclude {
			targets = append(targets, v)
		}
	}
	require.Len(t, c.vars, len(targets), "rule %d: targets %+v, Coraza %+v", md.ID(), targets, c.vars)
	for i, v := range targets {
		cv := c.vars[i]
		rv, err := variables.Parse(v.name)
		require.NoError(t, err)
		require.Equal(t, cv.v, rv, "rule %d: target %d", md.ID(), i)
		require.Equal(t, cv.count, v.count, "rule %d: target %d count", md.ID(), i)
		if v.keyRx {
			require.NotEmpty(t, cv.keyRx, "rule %d: target %d: a regex key Coraza reads as %q", md.ID(), i, cv.key)
			require.True(t, strings.EqualFold(cv.keyRx, "/"+v.key+"/"), "rule %d: target %d regex %q, Coraza %q", md.ID(), i, v.key, cv.keyRx)
			continue
		}
		require.Empty(t, cv.keyRx, "rule %d: target %d: key %q, Coraza reads regex %q", md.ID(), i, v.key, cv.keyRx)
		key := v.key
		if !argsVariable(rv) {
			key = strings.ToLower(key) // Coraza's keys of case-insensitive collections
		}
		require.Equal(t, cv.key, key, "rule %d: target %d key", md.ID(), i)
	}

	funcs := transformationFuncs()
	var trans []string
	for _, n := range r.trans {
		fn, ok := funcs[strings.ToLower(n)]
		require.True(t, ok, "rule %d: transformation %s unknown to Coraza", md.ID(), n)
		trans = append(trans, fn)
	}
	require.Equal(t, c.trans, trans, "rule %d: transformations %v", md.ID(), r.trans)
	require.Equal(t, c.multiMatch, r.multiMatch, "rule %d: multiMatch", md.ID())
}

// argsVariable reports the collections whose keys Coraza compares case
// sensitively.
func argsVariable(v variables.RuleVariable) bool {
	switch v {
	case variables.Args, variables.ArgsNames, variables.ArgsGet, variables.ArgsPost,
		variables.ArgsGetNames, variables.ArgsPostNames:
		return true
	}
	return false
}

// TestParseSecRuleAgreesWithCoraza: parseSecRule reads every SecRule of
// CRS 4.25's request rules (every paranoia level; the observer hands a
// chain's head alone) and what it reads is what Coraza compiled.
func TestParseSecRuleAgreesWithCoraza(t *testing.T) {
	read := 0
	for _, md := range loadCRS(t) {
		if !strings.HasPrefix(md.Raw(), "SecRule") {
			continue
		}
		r, err := parseSecRule(md.Raw())
		require.NoError(t, err, "rule %d: %s", md.ID(), md.Raw())
		requireAgrees(t, r, md)
		read++
	}
	require.Greater(t, read, 300, "too few CRS rules read")
}

// FuzzParseSecRule: wherever parseSecRule reads a rule text that Coraza
// also compiles, what it read is what Coraza compiled.
func FuzzParseSecRule(f *testing.F) {
	for _, tc := range seclangCases {
		vars, rest, _ := strings.Cut(strings.TrimPrefix(tc.raw, "SecRule "), " ")
		op, actions, _ := strings.Cut(strings.Trim(rest, `"`), `" "`)
		f.Add(vars, op, actions)
	}
	f.Fuzz(func(t *testing.T, vars, op, actions string) {
		if strings.ContainsAny(vars+op+actions, "\r\n") {
			return // one directive per line
		}
		raw := fmt.Sprintf(`SecRule %s "%s" "id:1,phase:2,%s"`, vars, op, actions)
		r, err := parseSecRule(raw)
		if err != nil {
			return
		}
		md, err := compileOne(raw)
		if err != nil || md == nil || md.ID() != 1 {
			return
		}
		requireAgrees(t, r, md)
	})
}
