package preselect

// Helpers that run Coraza itself, the engine of record, for the tests that
// prove pre-selection's models identical to it.

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/corazawaf/coraza/v3/types/variables"
	"github.com/stretchr/testify/require"
)

// captureOperator is a test-only operator that records every value Coraza
// hands it (after the rule's transformations), per transaction, and never
// matches.
const captureOperator = "meshwafTestCapture"

var (
	registerCaptureOnce sync.Once
	captured            sync.Map // transaction id -> *[]string
)

type capture struct{}

func (capture) Evaluate(tx plugintypes.TransactionState, v string) bool {
	if p, ok := captured.Load(tx.ID()); ok {
		*p.(*[]string) = append(*p.(*[]string), v)
	}
	return false
}

func registerCapture() {
	registerCaptureOnce.Do(func() {
		plugins.RegisterOperator(captureOperator, func(plugintypes.OperatorOptions) (plugintypes.Operator, error) {
			return capture{}, nil
		})
	})
}

// newWAF compiles directives (SecRuleEngine On first) over CRS's embedded
// file system.
func newWAF(t testing.TB, directives string) coraza.WAF {
	t.Helper()
	waf, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).
		WithDirectives("SecRuleEngine On\n" + directives))
	require.NoError(t, err, "directives:\n%s", directives)
	return waf
}

// getArg runs one transaction with the GET argument v=value through phase 1
// and returns the values the capture operator saw and the ids of the rules
// that matched.
func getArg(t testing.TB, waf coraza.WAF, value string) (seen []string, matched []int) {
	t.Helper()
	tx := waf.NewTransaction()
	defer func() { require.NoError(t, tx.Close()) }()
	var values []string
	captured.Store(tx.ID(), &values)
	defer captured.Delete(tx.ID())
	tx.AddGetRequestArgument("v", value)
	require.Nil(t, tx.ProcessRequestHeaders(), "value %q: unexpected interruption", value)
	for _, m := range tx.MatchedRules() {
		matched = append(matched, m.Rule().ID())
	}
	return values, matched
}

// crsRules returns every rule of CRS's request rules as the rule observer
// hands them to pre-selection, compiled once per test binary the way
// inspector compiles a profile (crs-setup and REQUEST-*.conf; the paranoia
// level is a run-time gate, so every level's rules are here).
var crsRules = sync.OnceValues(func() ([]types.RuleMetadata, error) {
	var rules []types.RuleMetadata
	cfg := coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(
		"SecRuleEngine On\nInclude @crs-setup.conf.example\n" +
			"SecAction \"id:99100,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=4,setvar:tx.detection_paranoia_level=4\"\n" +
			"Include @owasp_crs/REQUEST-*.conf\n")
	cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) { rules = append(rules, r) })
	_, err := coraza.NewWAF(cfg)
	return rules, err
})

func loadCRS(t testing.TB) []types.RuleMetadata {
	t.Helper()
	rules, err := crsRules()
	require.NoError(t, err)
	require.Greater(t, len(rules), 300, "CRS compiled to too few rules")
	return rules
}

// compiledRule is what Coraza compiled for one rule, read from its
// unexported fields: types.RuleMetadata.Operator() is empty in Coraza
// v3.8.1, and nothing else reports variables or transformations. A Coraza
// upgrade that renames these fields fails the tests loudly here.
type compiledRule struct {
	vars       []compiledVar
	op         string // Coraza's Function: "@rx", "@pm", ...
	opArg      string
	negated    bool
	trans      []string // function names of the transformations
	multiMatch bool
}

type compiledVar struct {
	v          variables.RuleVariable
	key        string // KeyStr
	keyRx      string // KeyRx's expression between slashes, "" without
	count      bool
	exceptions []string // KeyStr or /KeyRx/
}

func field(t testing.TB, v reflect.Value, name string) reflect.Value {
	t.Helper()
	f := v.FieldByName(name)
	require.True(t, f.IsValid(), "Coraza's %s has no field %s (Coraza upgraded?)", v.Type(), name)
	return f
}

func inspectRule(t testing.TB, md types.RuleMetadata) compiledRule {
	t.Helper()
	v := reflect.ValueOf(md)
	require.Equal(t, reflect.Pointer, v.Kind())
	v = v.Elem()
	var c compiledRule
	op := field(t, v, "operator")
	if !op.IsNil() {
		op = op.Elem()
		c.op = field(t, op, "Function").String()
		c.opArg = field(t, op, "Data").String()
		c.negated = field(t, op, "Negation").Bool()
	}
	vars := field(t, v, "variables")
	for i := 0; i < vars.Len(); i++ {
		rv := vars.Index(i)
		cv := compiledVar{
			v:     variables.RuleVariable(field(t, rv, "Variable").Uint()),
			key:   field(t, rv, "KeyStr").String(),
			keyRx: regexpExpr(t, field(t, rv, "KeyRx")),
			count: field(t, rv, "Count").Bool(),
		}
		ex := field(t, rv, "Exceptions")
		for j := 0; j < ex.Len(); j++ {
			e := ex.Index(j)
			if rx := regexpExpr(t, field(t, e, "KeyRx")); rx != "" {
				cv.exceptions = append(cv.exceptions, rx)
			} else {
				cv.exceptions = append(cv.exceptions, field(t, e, "KeyStr").String())
			}
		}
		c.vars = append(c.vars, cv)
	}
	tr := field(t, v, "transformations")
	for i := 0; i < tr.Len(); i++ {
		c.trans = append(c.trans, funcName(field(t, tr.Index(i), "Function")))
	}
	c.multiMatch = field(t, v, "MultiMatch").Bool()
	return c
}

// regexpExpr returns the source of a *regexp.Regexp field between
// slashes, "" if nil.
func regexpExpr(t testing.TB, rx reflect.Value) string {
	t.Helper()
	if rx.IsNil() {
		return ""
	}
	return "/" + field(t, rx.Elem(), "expr").String() + "/"
}

// funcName names a function value by its symbol.
func funcName(fn reflect.Value) string {
	return runtime.FuncForPC(fn.Pointer()).Name()
}

// corazaTransformations are the transformation names Coraza v3.8.1
// registers.
var corazaTransformations = []string{
	"base64Decode", "base64DecodeExt", "base64Encode", "cmdLine", "compressWhitespace", "cssDecode",
	"escapeSeqDecode", "hexDecode", "hexEncode", "htmlEntityDecode", "jsDecode", "length", "lowercase",
	"md5", "none", "normalisePath", "normalisePathWin", "normalizePath", "normalizePathWin",
	"removeComments", "removeCommentsChar", "removeNulls", "removeWhitespace", "replaceComments",
	"replaceNulls", "sha1", "uppercase", "urlDecode", "urlDecodeUni", "urlEncode", "utf8toUnicode",
	"trim", "trimLeft", "trimRight",
}

// transformationFuncs maps each lower-cased transformation name to the
// symbol of the function Coraza runs for it, learnt by compiling one rule
// per name.
var transformationFuncs = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	for _, name := range corazaTransformations {
		written := name
		if name == "none" {
			written = "NONE" // t:none clears the chain; other spellings run the function
		}
		var md types.RuleMetadata
		cfg := coraza.NewWAFConfig().WithDirectives(
			fmt.Sprintf(`SecRule ARGS "@unconditionalMatch" "id:1,phase:1,pass,nolog,t:none,t:%s"`, written))
		cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) { md = r })
		if _, err := coraza.NewWAF(cfg); err != nil {
			panic(err)
		}
		tr := reflect.ValueOf(md).Elem().FieldByName("transformations")
		out[strings.ToLower(name)] = funcName(tr.Index(0).FieldByName("Function"))
	}
	return out
})
