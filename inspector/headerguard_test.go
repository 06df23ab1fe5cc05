package inspector

import (
	"fmt"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/stretchr/testify/require"
)

// cookieBomb is a Cookie header value of n short cookies (10,000 make the
// issue's 89 KB header).
func cookieBomb(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "c%d=1", i)
	}
	return b.String()
}

// cookieHeaders spreads n cookies over k Cookie headers (name, value
// pairs for get).
func cookieHeaders(n, k int) []string {
	var kv []string
	for i := range k {
		per := n / k
		if i < n%k {
			per++
		}
		kv = append(kv, "Cookie", cookieBomb(per))
	}
	return kv
}

// headerBomb is n distinct headers (name, value pairs for get).
func headerBomb(n int) []string {
	kv := make([]string, 0, 2*n)
	for i := range n {
		kv = append(kv, fmt.Sprintf("X-H%d", i), "1")
	}
	return kv
}

// TestHeaderArgumentsLimit: more cookies, or more headers, than
// argumentsLimit are denied by the arguments guard before Coraza sees
// them, in a profile that allows arguments over the limit too (Coraza
// never limits cookies or headers), and the check allocates at most
// bodyGuardAllocMax.
func TestHeaderArgumentsLimit(t *testing.T) {
	rs := testRuleSet(t)
	tests := []struct {
		name  string
		extra []string
	}{
		{"cookies-10000-one-header", []string{"Cookie", cookieBomb(10000)}},
		{"cookies-1001-one-header", []string{"Cookie", cookieBomb(DefaultArgumentsLimit + 1)}},
		{"cookies-10000-over-20-headers", cookieHeaders(10000, 20)},
		{"cookies-1001-over-2-headers", cookieHeaders(DefaultArgumentsLimit+1, 2)},
		{"cookies-10000-lower-case-header", []string{"cookie", cookieBomb(10000)}},
		{"headers-5000", headerBomb(5000)},
		{"headers-997", headerBomb(DefaultArgumentsLimit - 3)}, // get's 4 headers: 1001
	}
	for _, tc := range tests {
		for _, prof := range []string{"", profAllowArgs} {
			t.Run(tc.name+"/"+profileOf(t, rs, prof).Name, func(t *testing.T) {
				r := get("HTTP/1.1", "/", tc.extra...)
				v := inspect(t, rs, prof, r)
				require.Equal(t, Deny, v.Decision, "rules %v", v.RuleIDs())
				require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)
				alloc := allocated(func() { inspect(t, rs, prof, r) })
				t.Logf("%d headers: %d bytes allocated", len(r.Headers), alloc)
				require.LessOrEqual(t, alloc, refusedCheckAllocMax(), "%d bytes allocated", alloc)
			})
		}
	}

	// At the limit exactly, cookies and headers go to Coraza as before.
	atLimit := []struct {
		name  string
		extra []string
	}{
		{"cookies-1000-one-header", []string{"Cookie", cookieBomb(DefaultArgumentsLimit)}},
		{"cookies-1000-over-3-headers", cookieHeaders(DefaultArgumentsLimit, 3)},
		{"cookies-1000-and-empty-pairs", []string{"Cookie", ";=; ;" + cookieBomb(DefaultArgumentsLimit) + "; = ;;"}},
		{"headers-996", headerBomb(DefaultArgumentsLimit - 4)},
	}
	for _, tc := range atLimit {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", get("HTTP/1.1", "/", tc.extra...))
			require.NotContains(t, v.RuleIDs(), RuleArgumentsLimit)
			require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
		})
	}
}

// TestHeaderArgumentsLimitKeepsOtherFindings: with cookies or headers over
// the limit, the URI and the body are still inspected, and detect mode
// reports the guard.
func TestHeaderArgumentsLimitKeepsOtherFindings(t *testing.T) {
	rs := testRuleSet(t)
	for name, extra := range map[string][]string{
		"cookies": {"Cookie", cookieBomb(10000)},
		"headers": headerBomb(5000),
	} {
		t.Run(name, func(t *testing.T) {
			v := inspect(t, rs, "", get("HTTP/1.1", seedSQLiURI, extra...))
			require.Equal(t, Deny, v.Decision)
			require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)
			require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "the query's SQLi is still found: %v", v.RuleIDs())

			r := send("POST", "HTTP/1.1", "/login", formCT, "user=%27+OR+1%3D1--", extra...)
			v = inspect(t, rs, "", r)
			require.Equal(t, Deny, v.Decision)
			require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)
			require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "the body's SQLi is still found: %v", v.RuleIDs())

			v = inspect(t, rs, profDetect, get("HTTP/1.1", "/", extra...))
			require.Equal(t, Detect, v.Decision)
			require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)
		})
	}
}

// cookieCases are countCookies' cases, also the fuzz seeds.
var cookieCases = []struct {
	name, value string
	want        int
}{
	{"empty", "", 0},
	{"one", "a=1", 1},
	{"rfc", "a=1; b=2; c=3", 3},
	{"no-spaces", "a=1;b=2", 2},
	{"repeated-name", "a=1; a=2", 2},
	{"empty-pairs", ";; ; a=1;;", 1},
	{"equals-only", "=; = ;\t=\t", 0},
	{"empty-name", "=x; \x01=y", 2},
	{"empty-value", "a=; b", 2},
	{"ctl-only", "\x01\x7f; \x00", 0},
	{"trailing-ctl", "a=1\x0b; b=2\x7f", 2},
	{"double-equals", "==; a==b", 2},
	{"non-ascii-space", "\u00a0; a=1", 2},
}

func TestCountCookies(t *testing.T) {
	for _, tc := range cookieCases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, countCookies(tc.value, 1000))
			require.Equal(t, tc.want, corazaCookies(t, tc.value), "Coraza's count")
			require.Equal(t, min(tc.want, 2), countCookies(tc.value, 1), "capped at limit+1")
		})
	}
	var n int
	bomb := cookieBomb(10000)
	alloc := allocated(func() { n = countCookies(bomb, DefaultArgumentsLimit) })
	require.Equal(t, DefaultArgumentsLimit+1, n)
	require.Less(t, alloc, uint64(4<<10), "counting allocated %d bytes", alloc)
}

// corazaCookies returns the number of REQUEST_COOKIES values Coraza adds
// for a Cookie header of value v.
func corazaCookies(t *testing.T, v string) int {
	t.Helper()
	waf, err := bareWAF()
	require.NoError(t, err)
	tx := waf.NewTransaction()
	defer func() { require.NoError(t, tx.Close()) }()
	tx.AddRequestHeader("Cookie", v)
	return len(tx.(plugintypes.TransactionState).Variables().RequestCookies().FindAll())
}

// FuzzCountCookies: the count is Coraza's, up to limit+1.
func FuzzCountCookies(f *testing.F) {
	for _, tc := range cookieCases {
		f.Add(tc.value)
	}
	f.Fuzz(func(t *testing.T, v string) {
		want := corazaCookies(t, v)
		require.Equal(t, want, countCookies(v, 1<<30))
		require.Equal(t, min(want, 4), countCookies(v, 3))
	})
}
