package inspector

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector/rulepack"
)

func inspect(t *testing.T, rs *RuleSet, profile string, r Request) Verdict {
	t.Helper()
	v, err := rs.Inspect(context.Background(), r, profile)
	require.NoError(t, err)
	requireValidVerdict(t, profileOf(t, rs, profile), v)
	return v
}

// hasRuleIn reports whether ids holds an id in [lo, hi].
func hasRuleIn(ids []int, lo, hi int) bool {
	for _, id := range ids {
		if id >= lo && id <= hi {
			return true
		}
	}
	return false
}

func TestDetectMode(t *testing.T) {
	rs := testRuleSet(t)

	v := inspect(t, rs, profDetect, get("HTTP/1.1", seedSQLiURI))
	require.Equal(t, Detect, v.Decision)
	require.True(t, v.Allowed())
	require.NotEmpty(t, v.Matches)
	require.GreaterOrEqual(t, v.AnomalyScore, DefaultInboundAnomalyThreshold)
	require.Equal(t, 949110, v.InterruptingRule)
	require.Subset(t, v.RuleIDs(), []int{942190, 942360})
	require.Equal(t, profDetect, v.Profile)

	// Guards are reported, not enforced, in detect mode too.
	v = inspect(t, rs, profDetect, get("HTTP/1.1", "/?"+manyArgs(DefaultArgumentsLimit+1, -1)))
	require.Equal(t, Detect, v.Decision)
	require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)

	r := send("POST", "HTTP/1.1", "/comments", formCT, "comment=hello")
	r.BodyTruncated = true
	v = inspect(t, rs, profDetect, r)
	require.Equal(t, Detect, v.Decision)
	require.Equal(t, RulePartialBody, v.InterruptingRule)

	// Benign traffic is a plain allow.
	v = inspect(t, rs, profDetect, benchGET())
	require.Equal(t, Allow, v.Decision)
	require.Empty(t, v.Matches)
}

// manyArgs returns n urlencoded arguments a0=1&a1=1...; the one at index
// sqliAt (when >= 0) carries the seed's SQLi instead.
func manyArgs(n, sqliAt int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte('&')
		}
		if i == sqliAt {
			fmt.Fprintf(&b, "a%d=%%27+UNION+SELECT+1%%2C+version%%28%%29+limit+1%%2C1--", i)
		} else {
			fmt.Fprintf(&b, "a%d=1", i)
		}
	}
	return b.String()
}

func jsonArray(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat("1,", n), ",") + "]"
}

// TestArgumentsLimit keeps to a few requests: one with 1000 arguments takes
// ~100 ms, and over a second under the race detector.
func TestArgumentsLimit(t *testing.T) {
	rs := testRuleSet(t)
	tests := []struct {
		name string
		req  Request
		// optIn also checks the AllowArgumentsOverLimit profile.
		optIn bool
	}{
		{"query-1001", get("HTTP/1.1", "/?"+manyArgs(1001, -1)), true},
		{"form-1500", send("POST", "HTTP/1.1", "/bulk", formCT, manyArgs(1500, -1)), true},
		{"json-1500", send("POST", "HTTP/1.1", "/bulk", "application/json", jsonArray(1500)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", tc.req)
			require.Equal(t, Deny, v.Decision)
			require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)
			require.Equal(t, RuleArgumentsLimit, v.InterruptingRule)
			require.Equal(t, DefaultDenyStatus, v.Status)
			require.Zero(t, v.AnomalyScore, "the guard, not CRS, denies")

			if tc.optIn {
				v = inspect(t, rs, profAllowArgs, tc.req)
				require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
				require.NotContains(t, v.RuleIDs(), RuleArgumentsLimit)
			}
		})
	}

	t.Run("query-1000-is-under-the-limit", func(t *testing.T) {
		v := inspect(t, rs, "", get("HTTP/1.1", "/?"+manyArgs(1000, -1)))
		require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
		require.Empty(t, v.Matches)
	})

	// Arguments past the limit are never seen by CRS; the guard is what
	// keeps an attack there from passing.
	t.Run("sqli-as-1200th-arg", func(t *testing.T) {
		r := get("HTTP/1.1", "/?"+manyArgs(1500, 1199))
		v := inspect(t, rs, "", r)
		require.Equal(t, Deny, v.Decision)
		require.Contains(t, v.RuleIDs(), RuleArgumentsLimit)

		v = inspect(t, rs, profAllowArgs, r)
		require.Equal(t, Allow, v.Decision, "opting in leaves argument 1200 uninspected")
		require.False(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "rules %v", v.RuleIDs())
	})

	t.Run("sqli-within-the-limit-still-detected", func(t *testing.T) {
		v := inspect(t, rs, profAllowArgs, get("HTTP/1.1", "/?"+manyArgs(1500, 10)))
		require.Equal(t, Deny, v.Decision)
		require.Equal(t, 949110, v.InterruptingRule)
		require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "rules %v", v.RuleIDs())
	})
}

func TestPartialBody(t *testing.T) {
	rs := testRuleSet(t)

	t.Run("truncated-by-caller", func(t *testing.T) {
		r := send("POST", "HTTP/1.1", "/comments", formCT, "comment=hello")
		r.BodyTruncated = true
		v := inspect(t, rs, "", r)
		require.Equal(t, Deny, v.Decision)
		require.Equal(t, RulePartialBody, v.InterruptingRule)
		require.Contains(t, v.RuleIDs(), RulePartialBody)

		v = inspect(t, rs, profAllowPartial, r)
		require.Equal(t, Allow, v.Decision)
		require.NotContains(t, v.RuleIDs(), RulePartialBody)

		r.BodyTruncated = false
		require.Equal(t, Allow, inspect(t, rs, "", r).Decision)
	})

	benign := "note=" + strings.Repeat("a", 4096-len("note="))
	require.Len(t, benign, 4096)
	t.Run("over-the-body-limit", func(t *testing.T) {
		r := send("POST", "HTTP/1.1", "/notes", formCT, benign)
		v := inspect(t, rs, profSmallBody, r)
		require.Equal(t, Deny, v.Decision)
		require.Equal(t, RulePartialBody, v.InterruptingRule)
		require.Zero(t, v.AnomalyScore)

		v = inspect(t, rs, profSmallBodyPartial, r)
		require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())

		// The default profile's 1 MiB limit takes the whole body.
		require.Equal(t, Allow, inspect(t, rs, "", r).Decision)
	})

	t.Run("limit-boundary", func(t *testing.T) {
		v := inspect(t, rs, profSmallBody, send("POST", "HTTP/1.1", "/notes", formCT, benign[:smallBodyLimit-1]))
		require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
		// Exactly the limit is inspected whole (Coraza flags it as over).
		v = inspect(t, rs, profSmallBody, send("POST", "HTTP/1.1", "/notes", formCT, benign[:smallBodyLimit]))
		require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
		v = inspect(t, rs, profSmallBody, send("POST", "HTTP/1.1", "/notes", formCT, benign[:smallBodyLimit+1]))
		require.Equal(t, Deny, v.Decision)
		require.Contains(t, v.RuleIDs(), RulePartialBody)
	})

	t.Run("attack-in-the-inspected-prefix", func(t *testing.T) {
		body := "q=%27+UNION+SELECT+1%2C+version%28%29+limit+1%2C1--&xss=%3Cscript%3Ealert(1)%3C%2Fscript%3E&pad=" + strings.Repeat("a", 4000)
		r := send("POST", "HTTP/1.1", "/search", formCT, body)
		v := inspect(t, rs, profSmallBody, r)
		require.Equal(t, Deny, v.Decision)
		require.Contains(t, v.RuleIDs(), RulePartialBody)
		require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "rules %v", v.RuleIDs())
		require.True(t, hasRuleIn(v.RuleIDs(), 941000, 941999), "rules %v", v.RuleIDs())
		require.Equal(t, 949110, v.InterruptingRule, "CRS's own verdict wins over the guard")

		v = inspect(t, rs, profSmallBodyPartial, r)
		require.Equal(t, Deny, v.Decision, "AllowPartialBody still inspects the prefix")
		require.NotContains(t, v.RuleIDs(), RulePartialBody)
		require.True(t, hasRuleIn(v.RuleIDs(), 942000, 942999), "rules %v", v.RuleIDs())
	})
}

func TestExclusions(t *testing.T) {
	rs := testRuleSet(t)
	seed := get("HTTP/1.1", seedSQLiURI)
	require.Equal(t, Deny, inspect(t, rs, "", seed).Decision)

	for _, p := range []string{profExclRemove, profExclTarget} {
		t.Run(p, func(t *testing.T) {
			v := inspect(t, rs, p, seed)
			require.Equal(t, Allow, v.Decision, "rules %v", v.RuleIDs())
			require.Zero(t, v.AnomalyScore)
			require.NotContains(t, v.RuleIDs(), 942190)
			require.NotContains(t, v.RuleIDs(), 942360)
		})
	}

	t.Run("target-exclusion-is-narrow", func(t *testing.T) {
		// The same payload in "username" is still SQLi.
		v := inspect(t, rs, profExclTarget, get("HTTP/1.1", "/?username=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--&password=x"))
		require.Equal(t, Deny, v.Decision)
		require.Subset(t, v.RuleIDs(), []int{942190, 942360})
		// XSS in password is not excluded.
		v = inspect(t, rs, profExclTarget, get("HTTP/1.1", "/?password=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
		require.Equal(t, Deny, v.Decision)
	})

	// PL2-only rules: 942150/942410 (SQL function names), 920320 (missing
	// User-Agent, a notice worth 2).
	noUA := Request{Method: "GET", URI: "/status", Protocol: "HTTP/1.1", Host: shopHost, Source: srcPeer, Destination: dstPeer}
	pl1 := inspect(t, rs, "", seed).RuleIDs()
	require.NotContains(t, pl1, 942150)
	require.NotContains(t, pl1, 942410)
	v := inspect(t, rs, "", noUA)
	require.Equal(t, Allow, v.Decision)
	require.Empty(t, v.Matches, "PL1 does not penalise a missing User-Agent or Accept")
	for _, p := range []string{profPL2Before, profPL2} {
		t.Run(p, func(t *testing.T) {
			v := inspect(t, rs, p, seed)
			require.Equal(t, Deny, v.Decision)
			require.Subset(t, v.RuleIDs(), []int{942150, 942410})
			require.Greater(t, v.AnomalyScore, inspect(t, rs, "", seed).AnomalyScore)

			v = inspect(t, rs, p, noUA)
			require.Equal(t, Allow, v.Decision)
			require.Equal(t, []int{920320}, v.RuleIDs())
			require.Equal(t, 2, v.AnomalyScore)
		})
	}
}

func TestOddInput(t *testing.T) {
	rs := testRuleSet(t)
	huge := strings.Repeat("A", 1<<20)
	// A 1 MiB User-Agent meets most of CRS's header regexes; the race
	// detector makes that ~20 s, so it is cut there (the 1 MiB X-Big stays).
	bigUA, bigURI := huge, 64<<10
	if raceEnabled {
		bigUA, bigURI = huge[:64<<10], 8<<10
	}
	tests := []struct {
		name string
		req  Request
	}{
		{"invalid-utf8-path", get("HTTP/1.1", "/caf\xe9/\xff\xfe")},
		{"invalid-utf8-query", get("HTTP/1.1", "/?q=\xc3\x28&\xff=\xfe")},
		{"invalid-utf8-header-value", get("HTTP/1.1", "/", "X-Name", "\xff\xfe\xfd", "Cookie", "a=\xc0\xaf")},
		{"invalid-utf8-header-name", get("HTTP/1.1", "/", "X-\xff", "1")},
		{"invalid-utf8-form", send("POST", "HTTP/1.1", "/", formCT, "a=\xff\xfe&\xc3\x28=1")},
		{"invalid-utf8-json", send("POST", "HTTP/1.1", "/", "application/json", "{\"a\":\"\xff\xfe\"}")},
		{"invalid-utf8-xml", send("POST", "HTTP/1.1", "/", "application/xml", "<a>\xff\xfe</a>")},
		{"invalid-utf8-multipart", send("POST", "HTTP/1.1", "/", multipartCT, multipart("a", "\xff\xfe"))},
		{"malformed-json", send("POST", "HTTP/1.1", "/", "application/json", `{"a":`)},
		{"malformed-xml", send("POST", "HTTP/1.1", "/", "text/xml", `<a><b></a>`)},
		{"malformed-multipart", send("POST", "HTTP/1.1", "/", multipartCT, "--nope\r\n")},
		{"nul-bytes", get("HTTP/1.1", "/a\x00b?c=\x00", "X-N", "a\x00b")},
		{"crlf-in-header", get("HTTP/1.1", "/", "X-Inject", "a\r\nSet-Cookie: x=y")},
		{"empty-method", withMethod(get("HTTP/1.1", "/"), "")},
		{"invalid-utf8-method", withMethod(get("HTTP/1.1", "/"), "G\xffT")},
		{"empty-request", Request{}},
		{"empty-uri", get("HTTP/1.1", "")},
		{"odd-protocol", get("SPDY/0.9", "/")},
		{"huge-header-value", get("HTTP/1.1", "/", "X-Big", huge)},
		{"huge-user-agent", withHeader(get("HTTP/2", "/"), "user-agent", bigUA)},
		{"huge-uri", get("HTTP/1.1", "/?q="+strings.Repeat("b", bigURI))},
		{"ipv6-host", withHeader(get("HTTP/1.1", "/"), "Host", "[::1]:8080")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := inspect(t, rs, "", tc.req) // no error, valid decision
			require.NotEmpty(t, v.Decision)
		})
	}
}

func TestUnknownProfileUsesDefault(t *testing.T) {
	rs := testRuleSet(t)
	v, err := rs.Inspect(context.Background(), get("HTTP/1.1", seedSQLiURI), "no-such-profile")
	require.NoError(t, err)
	requireValidVerdict(t, rs.Default(), v)
	require.Equal(t, DefaultProfileName, v.Profile)
	require.Equal(t, Deny, v.Decision)

	require.Equal(t, DefaultProfileName, rs.Default().Name)
	want := []string{DefaultProfileName}
	for _, p := range testProfiles() {
		want = append(want, p.Name)
	}
	require.ElementsMatch(t, want, rs.Profiles())
	require.IsIncreasing(t, rs.Profiles())
}

// TestSwapConcurrent replaces rule sets whole behind an atomic pointer, as
// the server does on reload, while checks run: each check finishes on the
// set it started with and answers as that set does.
func TestSwapConcurrent(t *testing.T) {
	strict := testRuleSet(t)
	lenient, err := Compile(Profile{AfterCRS: exclPassword})
	require.NoError(t, err)

	var cur atomic.Pointer[RuleSet]
	cur.Store(strict)
	seed := get("HTTP/1.1", seedSQLiURI)
	require.Equal(t, Deny, inspect(t, cur.Load(), "", seed).Decision)
	require.Same(t, strict, cur.Swap(lenient))
	require.Same(t, lenient, cur.Load())
	require.Equal(t, Allow, inspect(t, cur.Load(), "", seed).Decision)

	workers, perWorker := 8, 50
	if raceEnabled {
		perWorker = 15
	}
	type result struct {
		v   Verdict
		err error
	}
	results := make(chan result, workers*perWorker)
	stop := make(chan struct{})
	swaps := 0
	var swapper sync.WaitGroup
	swapper.Add(1)
	go func() {
		defer swapper.Done()
		sets := [2]*RuleSet{strict, lenient}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cur.Store(sets[i%2])
			swaps++
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				v, err := cur.Load().Inspect(context.Background(), seed, "")
				results <- result{v, err}
			}
		}()
	}
	wg.Wait()
	close(stop)
	swapper.Wait()
	close(results)

	seen := map[Decision]int{}
	for r := range results {
		require.NoError(t, r.err)
		switch r.v.Decision {
		case Deny: // strict
			require.Equal(t, 949110, r.v.InterruptingRule)
			require.Subset(t, r.v.RuleIDs(), []int{942190, 942360})
		case Allow: // lenient
			require.Empty(t, r.v.Matches)
			require.Zero(t, r.v.AnomalyScore)
		default:
			t.Fatalf("unexpected verdict %+v", r.v)
		}
		seen[r.v.Decision]++
	}
	require.Equal(t, workers*perWorker, seen[Deny]+seen[Allow])
	require.Positive(t, swaps)
	t.Logf("deny %d, allow %d, swaps %d", seen[Deny], seen[Allow], swaps)
}

func TestCanceledContext(t *testing.T) {
	rs := testRuleSet(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	for name, ctx := range map[string]context.Context{"canceled": canceled, "deadline": expired} {
		t.Run(name, func(t *testing.T) {
			for _, r := range []Request{get("HTTP/1.1", seedSQLiURI), send("POST", "HTTP/1.1", "/api/v1/users", "application/json", `{"a":1}`)} {
				v, err := rs.Inspect(ctx, r, "")
				require.Error(t, err)
				require.ErrorIs(t, err, ErrCanceled)
				require.Contains(t, err.Error(), ctx.Err().Error())
				require.Zero(t, v.Decision, "no verdict on error")
			}
		})
	}
	// A live context still works after canceled ones.
	require.Equal(t, Deny, inspect(t, rs, "", get("HTTP/1.1", seedSQLiURI)).Decision)
}

// endsAfter is a context whose Err reports it done from call n+1 on: it
// ends at a chosen checkpoint of an inspection.
type endsAfter struct {
	context.Context
	n, calls int
}

func (c *endsAfter) Err() error {
	c.calls++
	if c.calls > c.n {
		return context.DeadlineExceeded
	}
	return nil
}

// TestContextCheckedBetweenPhases: an inspection with a body consults ctx
// before it starts, before the body is written, before the body phase and
// before it reports the verdict. A ctx that ends at any of them gives no
// verdict, in particular one that ends while the body phase runs.
func TestContextCheckedBetweenPhases(t *testing.T) {
	rs := testRuleSet(t)
	req := send("POST", "HTTP/1.1", "/api/v1/users", "application/json", `{"name":"joe"}`)
	const checkpoints = 4
	for n := range checkpoints {
		ctx := &endsAfter{Context: context.Background(), n: n}
		v, err := rs.Inspect(ctx, req, "")
		require.ErrorIs(t, err, ErrCanceled, "ctx ended after %d checkpoints", n)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Zero(t, v.Decision, "no verdict once ctx ended (after %d checkpoints)", n)
	}
	ctx := &endsAfter{Context: context.Background(), n: checkpoints}
	v, err := rs.Inspect(ctx, req, "")
	require.NoError(t, err)
	require.Equal(t, Allow, v.Decision)
	require.Equal(t, checkpoints, ctx.calls)
}

func TestDirectives(t *testing.T) {
	d := Directives(Profile{BeforeCRS: "# before-marker", AfterCRS: "# after-marker"}.WithDefaults())
	before := strings.Index(d, "# before-marker")
	crs := strings.Index(d, "Include @owasp_crs/REQUEST-")
	after := strings.Index(d, "# after-marker")
	require.Positive(t, before)
	require.Less(t, strings.Index(d, "Include @crs-setup.conf.example"), before)
	require.Less(t, before, crs)
	require.Less(t, crs, after)
	require.Contains(t, d, "SecRuleEngine On\n")
	require.Contains(t, d, "SecArgumentsLimit 1000\n")
	require.Contains(t, d, "SecRequestBodyLimit 1048576\n")
	require.Contains(t, d, "tx.inbound_anomaly_score_threshold=5")
	require.Contains(t, d, "tx.blocking_paranoia_level=1,")

	p := Profile{Mode: ModeDetect, ParanoiaLevel: 3, InboundAnomalyThreshold: 12, DenyStatus: 418}
	// With decoded views on, only their narrowing of 933100 follows the CRS.
	require.True(t, strings.HasSuffix(Directives(p.WithDefaults()), "Include @owasp_crs/REQUEST-999-COMMON-EXCEPTIONS-AFTER.conf\n"+beyondAfterCRS(p)))
	off := false
	p.DecodedViews = &off
	d = Directives(p.WithDefaults())
	require.Contains(t, d, "SecRuleEngine DetectionOnly\n")
	require.Contains(t, d, "tx.blocking_paranoia_level=3,")
	require.Contains(t, d, "tx.inbound_anomaly_score_threshold=12")
	require.Contains(t, d, "status:418")
	require.NotContains(t, d, "status:403")
	// Without exclusions, afterCRS or decoded views, nothing follows the CRS.
	last := strings.LastIndex(d, "Include @owasp_crs/REQUEST-")
	require.True(t, strings.HasSuffix(d, "Include @owasp_crs/REQUEST-999-COMMON-EXCEPTIONS-AFTER.conf\n"), "after the CRS include: %q", d[last:])
	d = Directives(p.CRSOnly().WithDefaults()) // no rule pack either
	require.True(t, strings.HasSuffix(d, "Include @owasp_crs/REQUEST-*.conf\n"), "after the CRS include: %q", d[strings.Index(d, "Include @owasp_crs/REQUEST-*.conf"):])
}

// The rule pack comes after every CRS detection file and before CRS's
// blocking evaluation; without it, CRS is included as one pattern.
func TestDirectivesRulePack(t *testing.T) {
	d := Directives(Profile{}.WithDefaults())
	pack := strings.Index(d, rulepack.SecLang())
	require.Positive(t, pack)
	require.Less(t, strings.Index(d, "Include @owasp_crs/REQUEST-944-APPLICATION-ATTACK-JAVA.conf\n"), pack)
	require.Less(t, pack, strings.Index(d, "Include "+crsBlockingFile+"\n"))
	require.Equal(t, 1, strings.Count(d, "Include "+crsBlockingFile+"\n"))
	require.Equal(t, 18, strings.Count(d, "Include @owasp_crs/REQUEST-"), "every CRS request file once")
	off := false
	d = Directives(Profile{RulePack: &off}.WithDefaults())
	require.NotContains(t, d, rulepack.SecLang())
	d = Directives(Profile{RulePack: &off, Corroboration: &off}.WithDefaults())
	require.NotContains(t, d, rulepack.SecLang())
	require.Equal(t, 1, strings.Count(d, "Include @owasp_crs/REQUEST-"))
}
