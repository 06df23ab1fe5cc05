package distinctkeys_test

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/collection"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/corazawaf/coraza/v3/types/variables"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector/internal/distinctkeys"
)

const runs = 300

// twoRules is the reduced case: a non-matching rule, then one that must
// match, both on MULTIPART_PART_HEADERS with t:lowercase. Part "a" has two
// headers, so they share one key string in Coraza's collection.
const twoRules = `SecRequestBodyAccess On
SecRule MULTIPART_PART_HEADERS "@rx ^nothing-matches-this$" "id:10,phase:2,pass,nolog,t:none,t:lowercase"
SecRule MULTIPART_PART_HEADERS "@contains content-type: text/plain" "id:11,phase:2,pass,log,t:none,t:lowercase"
`

const boundary = "xYzZY"

var multipartBody = "--" + boundary + "\r\n" +
	"Content-Disposition: form-data; name=\"b\"\r\n\r\nvalue b\r\n" +
	"--" + boundary + "\r\n" +
	"Content-Disposition: form-data; name=\"a\"\r\n" +
	"Content-Type: text/plain\r\n\r\nvalue a\r\n" +
	"--" + boundary + "\r\n" +
	"Content-Disposition: form-data; name=\"c\"\r\n\r\nvalue c\r\n" +
	"--" + boundary + "--\r\n"

func newWAF(t *testing.T, directives string) coraza.WAF {
	t.Helper()
	distinctkeys.Register()
	waf, err := coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(directives))
	require.NoError(t, err)
	return waf
}

// matched runs the multipart request through waf and reports whether rule
// id matched.
func matched(t *testing.T, waf coraza.WAF, id int) bool {
	t.Helper()
	tx := waf.NewTransaction()
	defer func() { require.NoError(t, tx.Close()) }()
	tx.ProcessURI("/upload", "POST", "HTTP/1.1")
	tx.AddRequestHeader("Host", "example.com")
	tx.AddRequestHeader("Content-Type", "multipart/form-data; boundary="+boundary)
	require.Nil(t, tx.ProcessRequestHeaders())
	_, _, err := tx.WriteRequestBody([]byte(multipartBody))
	require.NoError(t, err)
	_, err = tx.ProcessRequestBody()
	require.NoError(t, err)
	for _, mr := range tx.MatchedRules() {
		if mr.Rule().ID() == id {
			return true
		}
	}
	return false
}

func TestTwoRulesStockCorazaVaries(t *testing.T) {
	// Without the hook rules, Coraza's transformation cache makes rule 11
	// miss in some runs: this is the defect the package removes (if a Coraza
	// upgrade fixes it, this test fails and the package can go).
	waf := newWAF(t, twoRules)
	misses := 0
	for range runs {
		if !matched(t, waf, 11) {
			misses++
		}
	}
	require.Positive(t, misses, "rule 11 matched in all %d runs of stock Coraza", runs)
	t.Logf("stock Coraza: rule 11 missed %d of %d runs", misses, runs)
}

func TestTwoRulesWithHook(t *testing.T) {
	waf := newWAF(t, distinctkeys.Directives(1, 2)+twoRules)
	for i := range runs {
		require.True(t, matched(t, waf, 11), "run %d: rule 11 missed", i)
	}
}

// vars is what Normalize reads of a transaction.
func vars(t *testing.T, tx types.Transaction) plugintypes.TransactionVariables {
	t.Helper()
	st, ok := tx.(plugintypes.TransactionState)
	require.True(t, ok, "Coraza's transaction is no TransactionState")
	return st.Variables()
}

func TestNormalize(t *testing.T) {
	waf := newWAF(t, "SecRequestBodyAccess On\n")
	tx := waf.NewTransaction()
	defer func() { require.NoError(t, tx.Close()) }()
	tx.ProcessURI("/p?q=1&q=2&=e1&=e2", "GET", "HTTP/1.1")
	// Coraza adds the values of one cookie name under one key string.
	tx.AddRequestHeader("Cookie", "$Version=1; $Version=2; x=3")
	tx.AddRequestHeader("X-A", "1")
	v := vars(t, tx)
	type kv struct{ k, v string }
	snapshot := func() map[string][]kv {
		out := map[string][]kv{}
		for _, col := range []interface {
			FindAll() []types.MatchData
			Name() string
		}{v.ArgsGet(), v.RequestCookies(), v.RequestHeaders()} {
			for _, md := range col.FindAll() {
				out[col.Name()+":"+strings.ToLower(md.Key())] = append(out[col.Name()+":"+strings.ToLower(md.Key())], kv{md.Key(), md.Value()})
			}
		}
		return out
	}
	before := snapshot()
	require.Equal(t, []kv{{"$Version", "1"}, {"$Version", "2"}}, before["REQUEST_COOKIES:$version"])

	require.Positive(t, distinctkeys.Normalize(v), "no collection rewritten: the cookies share a key string")
	require.Equal(t, before, snapshot(), "keys, values or the order of a key's values changed")

	seen := map[uintptr]string{}
	n := 0
	v.All(func(rv variables.RuleVariable, col collection.Collection) bool {
		if _, ok := col.(collection.Map); !ok || rv == variables.TX || rv == variables.Rule || rv == variables.MatchedVars {
			return true
		}
		for _, md := range col.FindAll() {
			p := addr(md.Key())
			require.NotZero(t, p, "%s:%q has no address of its own", rv.Name(), md.Key())
			require.NotContains(t, seen, p, "%s:%q shares its key string", rv.Name(), md.Key())
			seen[p] = rv.Name() + ":" + md.Key()
			n++
		}
		return true
	})
	require.GreaterOrEqual(t, n, 9, "values checked")
	require.Zero(t, distinctkeys.Normalize(v), "a second Normalize rewrote collections")
}

func TestFresh(t *testing.T) {
	for _, k := range []string{"", "a", "Content-Type"} {
		a, b := distinctkeys.Fresh(k), distinctkeys.Fresh(k)
		require.Equal(t, k, a)
		require.NotZero(t, addr(a), "%q", k)
		require.NotEqual(t, addr(a), addr(b), "%q", k)
		require.NotEqual(t, addr(k), addr(a), "%q", k)
	}
}

// addr is the address Coraza's cache keys a value by (a number: testify
// compares pointers by what they point to).
func addr(k string) uintptr { return uintptr(unsafe.Pointer(unsafe.StringData(k))) }
