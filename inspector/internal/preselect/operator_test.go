package preselect

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/stretchr/testify/require"
)

// crsOptions locate @pmFromFile data as inspector does.
var crsOptions = Options{Root: coreruleset.FS, RootPrefix: "@owasp_crs/"}

// operatorCase is one operator with its argument, as a rule of file
// writes it.
type operatorCase struct {
	op, arg string
	file    string // the rule's configuration file ("" for inline SecLang)
}

// corazaArg is the argument the one-rule WAF is given: @pmFromFile's data
// file by its path in the embedded file system (inline SecLang has no
// directory of its own).
func (c operatorCase) corazaArg() string {
	if strings.EqualFold(c.op, "pmFromFile") && c.file != "" {
		return path.Join(path.Dir(c.file), c.arg)
	}
	return c.arg
}

func (c operatorCase) String() string { return fmt.Sprintf("@%s %s", c.op, c.arg) }

// operatorPair is Coraza's operator in a one-rule WAF and pre-selection's
// matcher for the same operator.
type operatorPair struct {
	waf   coraza.WAF
	m     Matcher
	index *phraseIndex // @pm and @pmFromFile: the plan's combined automaton over m's phrases
}

var operatorPairs sync.Map // operatorCase -> *operatorPair

func newOperatorPair(t testing.TB, c operatorCase) *operatorPair {
	t.Helper()
	if p, ok := operatorPairs.Load(c); ok {
		return p.(*operatorPair)
	}
	b := &builder{opts: crsOptions, plan: &Plan{}}
	m, err := b.newMatcher(c.op, c.arg, c.file)
	require.NoError(t, err, "%s", c)
	p := &operatorPair{
		waf: newWAF(t, fmt.Sprintf(`SecRule ARGS_GET:v "@%s %s" "id:1,phase:1,pass,log,t:none"`, c.op,
			strings.ReplaceAll(c.corazaArg(), `"`, `\"`))),
		m:     m,
		index: newPhraseIndex(b.pms),
	}
	operatorPairs.Store(c, p)
	return p
}

// check compares the matcher (and the plan's phrase index, for @pm) with
// Coraza's operator on v and returns Coraza's answer.
func (p *operatorPair) check(t testing.TB, c operatorCase, v string) bool {
	t.Helper()
	_, matched := getArg(t, p.waf, v)
	want := slices.Contains(matched, 1)
	require.Equal(t, want, p.m.Match(v), "%s on %q", c, v)
	if p.index != nil {
		set := make([]uint64, p.index.words)
		p.index.scan(v, set)
		require.Equal(t, want, set[0]&1 != 0, "%s on %q: phrase index", c, v)
	}
	return want
}

// operatorValues are checked against every operator case.
var operatorValues = []string{
	"", "a", "ab", "abc", "ABC", "aBc", "xabc", "abcx", "xabcx", "a b", "a b c", "é", "É", "caf\xc3\xa9",
	"\x00", "a\x00", "\xff", "\x7f", "\t", " ", "select", "SELECT", "Select * from users", "1 union select",
	"unio", "sel", "x/etc/passwdx", "/ETC/PASSWD", "straße", "STRAßE", "STRASSE", "1' or '1'='1",
	"admin'--", "1;DROP TABLE x", "' OR 1=1 #", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
	"javascript:alert(1)", `<a href="x">`, "hello world", "1-255", "%00", "cmd.exe", "passwd",
}

// operatorCases are hand-picked: case, non-ASCII, empty phrases.
var operatorCases = []operatorCase{
	{op: "pm", arg: "select union insert"},
	{op: "pm", arg: "SELECT Union"},
	{op: "pm", arg: "é straße /etc/passwd"},
	{op: "pm", arg: "ab"},
	{op: "pm", arg: "abc abcx bc"},
	{op: "pm", arg: "a  b"},
	{op: "contains", arg: "abc"},
	{op: "contains", arg: "ABC"},
	{op: "contains", arg: "a b"},
	{op: "contains", arg: "é"},
	{op: "streq", arg: "abc"},
	{op: "streq", arg: "ABC"},
	{op: "streq", arg: "é"},
	{op: "beginsWith", arg: "abc"},
	{op: "beginsWith", arg: "a"},
	{op: "beginsWith", arg: "É"},
	{op: "endsWith", arg: "abc"},
	{op: "endsWith", arg: "c"},
	{op: "endsWith", arg: "\xa9"},
	{op: "validateByteRange", arg: "1-255"},
	{op: "validateByteRange", arg: "9,10,13,32-126,128-255"},
	{op: "validateByteRange", arg: "32-36,38-126"},
	{op: "validateByteRange", arg: "38,44-46,48-58,61,65-90,95,97-122"},
	{op: "validateByteRange", arg: "32,34,38,42-59,61,65-90,95,97-122"},
	{op: "validateByteRange", arg: "0-255"},
	{op: "validateByteRange", arg: "97"},
	{op: "detectSQLi"},
	{op: "detectXSS"},
}

// TestOperatorsMatchCoraza: each modelled operator answers as Coraza's on
// every value, and each case both matches and does not match somewhere.
func TestOperatorsMatchCoraza(t *testing.T) {
	registerCapture()
	values := slices.Clone(operatorValues)
	for b := range 256 {
		values = append(values, string([]byte{byte(b)}), "ok"+string([]byte{byte(b)}))
	}
	for _, c := range operatorCases {
		t.Run(c.String(), func(t *testing.T) {
			p := newOperatorPair(t, c)
			answers := map[bool]int{}
			for _, v := range append(slices.Clone(values), c.arg, strings.ToUpper(c.arg), "x"+c.arg+"y") {
				answers[p.check(t, c, v)]++
			}
			if c.arg != "0-255" { // every byte is valid: never matches
				require.Positive(t, answers[true], "no value matches: the case checks little")
			}
			if c.arg != "a  b" { // an empty phrase: always matches
				require.Positive(t, answers[false], "every value matches: the case checks little")
			}
		})
	}
}

// modelledOperators are the operators newMatcher answers for (@rx only
// through Options.Regexp, which inspector provides and tests).
var modelledOperators = map[string]bool{
	"pm": true, "pmFromFile": true, "validateByteRange": true, "contains": true, "streq": true,
	"beginsWith": true, "endsWith": true, "detectSQLi": true, "detectXSS": true,
}

// crsOperatorCases returns the operator of every CRS request rule that
// pre-selection models (negated ones included: the matcher models the
// operator, the negation is the rule's), each once, and the @pmFromFile
// data files CRS reads. A modelled operator newMatcher refuses fails the
// test unless its argument holds a macro.
func crsOperatorCases(t testing.TB) (cases []operatorCase, dataFiles map[string]bool) {
	t.Helper()
	seen := map[operatorCase]bool{}
	dataFiles = map[string]bool{}
	for _, md := range loadCRS(t) {
		cr := inspectRule(t, md)
		op := strings.TrimPrefix(strings.TrimPrefix(cr.op, "!"), "@")
		if !modelledOperators[op] {
			continue
		}
		c := operatorCase{op: op, arg: cr.opArg, file: md.File()}
		if op == "pmFromFile" {
			dataFiles[c.arg] = true
		}
		b := &builder{opts: crsOptions, plan: &Plan{}}
		if _, err := b.newMatcher(c.op, c.arg, c.file); err != nil {
			require.ErrorIs(t, err, errNotModelled)
			require.Contains(t, c.arg, "%{", "rule %d: %s refused: %v", md.ID(), c, err)
			continue
		}
		if !seen[c] {
			seen[c] = true
			cases = append(cases, c)
		}
	}
	return cases, dataFiles
}

// dataPhrases returns every line of a data file as is, and its phrases
// as Coraza reads them.
func dataPhrases(t testing.TB, name string) (lines []string) {
	t.Helper()
	data, err := fs.ReadFile(coreruleset.FS, name)
	require.NoError(t, err)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.NoError(t, sc.Err())
	return lines
}

// TestCRSOperatorsMatchCoraza: every modelled operator CRS's request rules
// use, with their own arguments and data files (every @pmFromFile file),
// answers as Coraza's: on the common values, on every line of the data
// file as written, upper-cased, inside other text and cut short by one
// byte at either end.
func TestCRSOperatorsMatchCoraza(t *testing.T) {
	registerCapture()
	cases, dataFiles := crsOperatorCases(t)
	require.GreaterOrEqual(t, len(dataFiles), 10, "CRS reads too few data files: the rules were not read")
	files := map[string]bool{}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			p := newOperatorPair(t, c)
			values := slices.Clone(operatorValues)
			words := []string{c.arg}
			switch c.op {
			case "pmFromFile":
				files[c.arg] = true
				words = dataPhrases(t, c.corazaArg())
			case "pm":
				words = strings.Split(c.arg, " ")
			}
			for _, w := range words {
				values = append(values, w, strings.ToUpper(w), "x "+w+" y", strings.TrimSpace(w))
				if len(w) > 1 {
					values = append(values, w[1:], w[:len(w)-1])
				}
			}
			answers := map[bool]int{}
			for _, v := range values {
				answers[p.check(t, c, v)]++
			}
			require.Positive(t, answers[true], "no value matches")
			require.Positive(t, answers[false], "every value matches")
		})
	}
	require.Equal(t, dataFiles, files, "every data file CRS reads is compared")
}

// TestOperatorNotModelled: operators and arguments pre-selection does not
// answer for are refused as not modelled (the rule is then kept).
func TestOperatorNotModelled(t *testing.T) {
	b := &builder{opts: crsOptions, plan: &Plan{}}
	for _, c := range []operatorCase{
		{op: "rx", arg: "a"}, // without Options.Regexp
		{op: "eq", arg: "0"},
		{op: "within", arg: "a b"},
		{op: "contains", arg: "%{tx.x}"},
		{op: "validateByteRange", arg: ""},
		{op: "validateByteRange", arg: "1-256"},
		{op: "pmFromFile", arg: "lfi-os-files.data"}, // inline SecLang
		{op: "pmFromFile", arg: "/etc/passwd", file: "@owasp_crs/REQUEST-930.conf"}, // absolute
		{op: "pmFromFile", arg: "missing.data", file: "@owasp_crs/REQUEST-930.conf"},
	} {
		_, err := b.newMatcher(c.op, c.arg, c.file)
		require.True(t, errors.Is(err, errNotModelled), "%s (file %q): %v", c, c.file, err)
	}
}

// fuzzOperatorCases are the cases FuzzOperators picks from.
var fuzzOperatorCases = sync.OnceValue(func() []operatorCase {
	cases := slices.Clone(operatorCases)
	for _, f := range []string{"lfi-os-files.data", "unix-shell.data", "restricted-files.data",
		"php-function-names-933150.data", "java-classes.data", "ssrf.data"} {
		cases = append(cases, operatorCase{op: "pmFromFile", arg: f, file: "@owasp_crs/REQUEST-930-APPLICATION-ATTACK-LFI.conf"})
	}
	return cases
})

// FuzzOperators compares a modelled operator with Coraza's on arbitrary
// values.
func FuzzOperators(f *testing.F) {
	registerCapture()
	for i, v := range operatorValues {
		f.Add(uint8(i), v)
	}
	f.Fuzz(func(t *testing.T, i uint8, v string) {
		cases := fuzzOperatorCases()
		c := cases[int(i)%len(cases)]
		newOperatorPair(t, c).check(t, c, v)
	})
}
