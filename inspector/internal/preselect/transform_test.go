package preselect

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corazawaf/coraza/v3"
	"github.com/stretchr/testify/require"
)

// transformValues are values every modelled transformation is checked on:
// each kind of byte or sequence one of them treats specially.
var transformValues = []string{
	"", "a", "abc", "ABC", "MiXeD CaSe 123", "hello world", "a  b", " a ", "a\tb", "\t\n\v\f\r ",
	"a\vb", "a\fb", "a\r\nb", "a\xa0b", "a\u00a0b", "a\u0085b", "a\x85b", "\xa0", "\u00a0 \u00a0",
	"a\u2003b", "a\u3000b", "%41", "%zz", "%", "a%2", "%u0041", "a+b", "++", "a%20b+c",
	"&lt;script&gt;", "&amp;&#60;&#x3c;", "&lt", "&#0", "&#0ABC", "&#x80;", "&nbsp;x", "&unknown;", "&",
	`a\b`, `\x41`, `\u0041`, `\\`, `\`, `a\"b`, `\0`, `\101`, "a\x00b", "\x00\x00", "a/*c*/b", "/*",
	"*/", "a/**/b", "/*unterminated", "a--b", "a<!--b-->c", "#comment", "a#b", "--", "-->",
	"/a/b/../c", "/a/./b", "a//b", "/a/b/", "a/b/", ".", "..", "../x", "/..", "./", "x/.", "x/..",
	"a\\b\\c", "c:\\windows\\win.ini", "file.txt::$DATA", "file.txt.", "file.txt ", "a/b. /c",
	"a b/c", "/", "//", "\xff\xfe", "a\xffb", "A\xff", "caf\xc3\xa9", "CAFÉ", "\xc3", "İ", "ẞ", "K",
	"cmd.exe /c DIR", "a , b ; c", "a ( b", "a^b'c\"d", "A\tB\r\nC", "a ", " /x", "a,/b",
	"SELECT * FROM t WHERE a='1' --", "<script>alert(1)</script>", "1 UNION SELECT",
}

// transformNames lists the modelled transformations in a fixed order, for
// the fuzz target's name index.
var transformNames = slices.Sorted(maps.Keys(transforms))

// transformWAFs caches one WAF per transformation chain and mode.
var transformWAFs sync.Map // "name,name|multi" -> coraza.WAF

// chainWAF returns a WAF whose rule 1 hands ARGS_GET:v, after the chain
// of transformations (with multiMatch if multi), to the capture operator.
func chainWAF(t testing.TB, names []string, multi bool) coraza.WAF {
	t.Helper()
	key := fmt.Sprintf("%s|%t", strings.Join(names, ","), multi)
	if w, ok := transformWAFs.Load(key); ok {
		return w.(coraza.WAF)
	}
	registerCapture()
	actions := "id:1,phase:1,pass,nolog,t:none"
	for _, n := range names {
		actions += ",t:" + n
	}
	if multi {
		actions += ",multiMatch"
	}
	w := newWAF(t, fmt.Sprintf(`SecRule ARGS_GET:v "@%s" "%s"`, captureOperator, actions))
	transformWAFs.Store(key, w)
	return w
}

// modelChain applies the modelled chain as a plan's transformation trie
// does: every prefix's output, or ok false if any step is not modelled.
func modelChain(names []string, v string) (outs []string, ok bool) {
	for _, n := range names {
		fn, found := transforms[strings.ToLower(n)]
		if !found {
			return nil, false
		}
		if v, ok = fn(v); !ok {
			return nil, false
		}
		outs = append(outs, v)
	}
	return outs, true
}

// checkChain compares the modelled chain with Coraza's on v and reports
// whether the model answered (ok). Without multiMatch the value Coraza
// hands the operator must be the chain's output; with multiMatch every
// value Coraza hands it must be one the plan analyses (v or a prefix's
// output), and each output that differs from its input must be one Coraza
// hands it (Coraza skips a step it reports unchanged and goes on from the
// earlier value, so an unreported change would make later steps differ).
func checkChain(t testing.TB, names []string, v string) bool {
	t.Helper()
	outs, ok := modelChain(names, v)
	if !ok {
		return false
	}
	seen, _ := getArg(t, chainWAF(t, names, false), v)
	require.Equal(t, []string{outs[len(outs)-1]}, seen, "t:%s of %q", strings.Join(names, ",t:"), v)

	seen, _ = getArg(t, chainWAF(t, names, true), v)
	want := []string{v}
	prev := v
	for _, o := range outs {
		if o != prev {
			want = append(want, o)
		}
		prev = o
	}
	for _, s := range seen {
		require.Contains(t, want, s, "multiMatch t:%s of %q: Coraza hands a value the plan does not analyse", strings.Join(names, ",t:"), v)
	}
	for _, w := range want {
		require.Contains(t, seen, w, "multiMatch t:%s of %q: the model changes the value but Coraza reports no change", strings.Join(names, ",t:"), v)
	}
	return true
}

// TestTransformsMatchCoraza: every modelled transformation, wherever it
// answers, answers what Coraza's transformation of that name hands the
// operator, and changes the value only where Coraza reports a change.
func TestTransformsMatchCoraza(t *testing.T) {
	for _, name := range transformNames {
		t.Run(name, func(t *testing.T) {
			answered := 0
			for _, v := range transformValues {
				if checkChain(t, []string{name}, v) {
					answered++
				}
			}
			require.Positive(t, answered, "no value modelled: the test checks nothing")
		})
	}
}

// TestTransformChainsMatchCoraza: the chains CRS runs under multiMatch
// (and ones mixing a transformation whose change Coraza may not report),
// compared as a plan's trie evaluates them.
func TestTransformChainsMatchCoraza(t *testing.T) {
	chains := [][]string{
		{"utf8toUnicode", "urlDecodeUni", "removeNulls", "cmdLine"},
		{"urlDecodeUni", "jsDecode"},
		{"urlDecodeUni", "replaceComments"},
		{"utf8toUnicode", "urlDecodeUni", "removeNulls"},
		{"htmlEntityDecode", "lowercase"},
		{"removeWhitespace", "lowercase"},
		{"lowercase", "removeWhitespace", "compressWhitespace"},
		{"normalizePathWin", "normalizePath", "length"},
	}
	for _, c := range chains {
		t.Run(strings.Join(c, ","), func(t *testing.T) {
			for _, v := range transformValues {
				checkChain(t, c, v)
			}
		})
	}
}

// FuzzTransforms compares a modelled transformation, and a chain of two,
// with Coraza's on arbitrary values.
func FuzzTransforms(f *testing.F) {
	for i, v := range transformValues {
		f.Add(uint8(i), uint8(i/3), v)
	}
	f.Fuzz(func(t *testing.T, i, j uint8, v string) {
		a := transformNames[int(i)%len(transformNames)]
		b := transformNames[int(j)%len(transformNames)]
		checkChain(t, []string{a}, v)
		checkChain(t, []string{a, b}, v)
	})
}

// notModelled are the transformations CRS uses that pre-selection
// deliberately does not model: a rule using one is kept.
var notModelled = map[string]string{
	"base64decode": "decodes to arbitrary bytes; CRS uses it in rules with other unmodelled steps",
	"hexencode":    "only in rules on values meshwaf does not analyse",
	"sha1":         "only in rules on values meshwaf does not analyse",
}

// TestCRSTransformationsModelled: every transformation CRS's request
// rules run (at any paranoia level) is modelled or deliberately not.
func TestCRSTransformationsModelled(t *testing.T) {
	bySymbol := map[string][]string{} // Coraza's function -> its names
	for name, sym := range transformationFuncs() {
		bySymbol[sym] = append(bySymbol[sym], name)
	}
	used := map[string]bool{}
	for _, md := range loadCRS(t) {
		for _, sym := range inspectRule(t, md).trans {
			names := bySymbol[sym]
			require.NotEmpty(t, names, "rule %d: transformation %s not in Coraza's list", md.ID(), sym)
			modelled := false
			for _, n := range names {
				_, in := transforms[n]
				_, out := notModelled[n]
				modelled = modelled || in || out
				used[n] = true
			}
			require.True(t, modelled, "rule %d: CRS uses t:%v, neither modelled nor in notModelled", md.ID(), names)
		}
	}
	for n := range notModelled {
		require.NotContains(t, transforms, n, "%s is modelled and listed as not modelled", n)
		require.True(t, used[n], "%s is listed as not modelled but CRS does not use it", n)
	}
	require.Greater(t, len(used), 15, "CRS uses too few transformations: the rules were not read")
}
