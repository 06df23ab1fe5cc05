package inspector_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// TestPreselectDifferential compares meshwaf with rule pre-selection on and
// off (the same profiles compiled twice, the second time with Preselect
// false), in process: both sides run meshwaf's operators, so they must agree
// on everything, the logged data included: error, decision, status, anomaly
// score, interrupting rule and every matched rule's id, message and data.
//
// The requests are the corpus of TestDifferential (CRS's regression corpus
// at PL1 block and PL4 detect, the case table, the benchmark requests, the
// guard requests) and generated ones: ordinary requests with payloads that
// CRS flags in the corpus put, in many encodings, into every place CRS reads
// (psRequests), each under one of the profiles of psProfiles (exclusions and
// user rules included).
//
// It also checks that pre-selection worked: the off side reports no
// pre-selection at all, the on side removed most candidate rules of the
// ordinary requests, removed rules under every profile that has it on, and
// both sides matched rules on many requests (the comparison is not over
// requests nothing matches).
func TestPreselectDifferential(t *testing.T) {
	if inspector.RaceEnabled {
		t.Skip("the pre-selection corpus run takes minutes under the race detector; CI runs it without -race")
	}
	start := time.Now()
	pair := psRuleSets(t)
	compiled := time.Since(start)

	corpusReqs := diffRequests(t)
	if testing.Short() {
		corpusReqs = sample(corpusReqs, 10)
	}
	res := psRunAll(pair, corpusReqs)
	ranCorpus := time.Since(start) - compiled

	gen := psRequests(t, psPayloads(t, corpusReqs, res), psGenerated())
	genRes := psRunAll(pair, gen)
	ranGen := time.Since(start) - compiled - ranCorpus

	reqs := append(slices.Clip(corpusReqs), gen...)
	res = append(res, genRes...)

	var (
		failed, nondetData, matched, genMatched int
		ordinary                                struct{ candidates, removed int }
		removed                                 = map[string]int{}
		total                                   struct{ candidates, removed int }
		userHits                                = map[int]int{}
	)
	for i, r := range reqs {
		x := res[i]
		if x.offStats.Candidates != 0 || x.offStats.Removed != 0 || x.offStats.Rules != 0 {
			t.Fatalf("%s [%s]: pre-selection ran with Preselect false: %+v", r.Name, r.Profile, x.offStats)
		}
		d := psDiff(x.on, x.off)
		if d != "" && sameVerdict(x.on, x.off) && psSameUnderReruns(t, pair, r, x) {
			nondetData++
			if nondetData <= 3 {
				t.Logf("%s [%s]: the logged data or messages differ between runs of each side too (Coraza's map order): %s", r.Name, psName(r.Profile), d)
			}
			d = ""
		}
		if d != "" {
			failed++
			if failed <= 20 {
				t.Errorf("%s [%s]: pre-selection on vs off: %s\nrequest: %s", r.Name, psName(r.Profile), d, psDescribe(r.Req))
			}
		}
		for _, id := range psIDs(x.off) {
			userHits[id]++
		}
		if len(x.off.Matches) > 0 {
			matched++
			if i >= len(corpusReqs) {
				genMatched++
			}
		}
		total.candidates += x.onStats.Candidates
		total.removed += x.onStats.Removed
		removed[psName(r.Profile)] += x.onStats.Removed
		if psOrdinary(r.Name) {
			ordinary.candidates += x.onStats.Candidates
			ordinary.removed += x.onStats.Removed
		}
	}
	require.Zero(t, failed, "requests on which pre-selection changed the verdict")

	require.Positive(t, total.removed, "pre-selection removed no rule: it is off")
	require.Positive(t, ordinary.candidates, "no ordinary request was inspected")
	require.Greater(t, 2*ordinary.removed, ordinary.candidates,
		"pre-selection removed %d of %d candidate rules of ordinary requests (at most half)", ordinary.removed, ordinary.candidates)
	require.Equal(t, psPreselectOff, pair.on.PreselectOff(), "the profiles pre-selection is off for")
	for _, p := range psProfiles() {
		name := psName(p.Name)
		if slices.Contains(psPreselectOff, name) {
			require.Zero(t, removed[name], "profile %s: pre-selection is off, yet rules were removed", name)
			continue
		}
		require.Positive(t, removed[name], "profile %s: pre-selection removed no rule", name)
	}
	for _, id := range psUserRules {
		require.Positive(t, userHits[id], "user rule %d never matched: its profile tests nothing", id)
	}
	kept := inspector.PreselectKept(pair.on, profUserSkip)
	require.Contains(t, kept, 10004, "rule 10004, which a skip:1 counts, must be kept")
	require.NotContains(t, kept, 10005, "rule 10005 is outside the skip window and analysable")
	require.NotContains(t, inspector.PreselectKept(pair.on, profUserTransform), 10001, "rule 10001 is analysable")
	mm := inspector.PreselectKept(pair.on, profUserMultiMatch)
	require.NotContains(t, mm, 10002, "rule 10002 (multiMatch @rx) is analysable")
	require.NotContains(t, mm, 10007, "rule 10007 (multiMatch @pm) is analysable")
	require.Greater(t, 10*matched, 3*len(reqs), "only %d of %d requests matched a rule: the comparison tests little", matched, len(reqs))
	require.Greater(t, 10*genMatched, 3*len(gen), "only %d of %d generated requests matched a rule", genMatched, len(gen))

	t.Logf("%d requests (%d corpus, %d generated; %d and %d with matches), 0 disagreements (%d differed in logged data or messages, but so did reruns of each side: Coraza's map order); "+
		"removed %d of %d candidate rules (ordinary requests: %d of %d, %.0f%%); compile %v, corpus %v, generated %v",
		len(reqs), len(corpusReqs), len(gen), matched-genMatched, genMatched, nondetData,
		total.removed, total.candidates, ordinary.removed, ordinary.candidates, 100*float64(ordinary.removed)/float64(ordinary.candidates),
		compiled.Round(time.Millisecond), ranCorpus.Round(time.Millisecond), ranGen.Round(time.Millisecond))
}

// TestPreselectHookSupported pins what pre-selection needs of Coraza's
// transaction (its collections and RemoveRuleByID, reached through an
// interface assertion): a Coraza upgrade that breaks it silently turns
// pre-selection off, which this test makes loud.
func TestPreselectHookSupported(t *testing.T) {
	pair := psPairOf(t, "") // the default profile alone
	require.True(t, inspector.PreselectSupported(pair.on, ""),
		"Coraza's transaction no longer offers what pre-selection asserts (Collection, RemoveRuleByID): a Coraza upgrade broke it and pre-selection is off")
	v, err := pair.on.Inspect(context.Background(), corpus.Get(), "")
	require.NoError(t, err)
	if v.Preselect.Removed == 0 {
		t.Fatalf("a GET under the default profile had no rule removed (%+v): a Coraza upgrade probably broke the transaction assertion in inspector/internal/preselect and pre-selection is off", v.Preselect)
	}
	require.Greater(t, v.Preselect.Removed, 100, "rules removed from a GET under the default profile (%+v)", v.Preselect)
	require.LessOrEqual(t, v.Preselect.Removed, v.Preselect.Candidates)
	require.LessOrEqual(t, v.Preselect.Candidates, v.Preselect.Rules)

	off, err := pair.off.Inspect(context.Background(), corpus.Get(), "")
	require.NoError(t, err)
	require.Zero(t, off.Preselect, "Preselect false must leave every rule in place")
	require.Equal(t, outcome(off, nil), outcome(v, nil), "the GET's verdict with pre-selection on and off")
}

// psPair is the same profiles compiled with pre-selection on and off.
type psPair struct {
	on, off *inspector.RuleSet
}

var psShared struct {
	once sync.Once
	pair psPair
	err  error
}

// psRuleSets compiles psProfiles twice, once per test binary.
func psRuleSets(tb testing.TB) psPair {
	tb.Helper()
	psShared.once.Do(func() {
		ps := psProfiles()
		off := make([]inspector.Profile, len(ps))
		no := false
		for i, p := range ps {
			p.Preselect = &no
			off[i] = p
		}
		var errOn, errOff error
		psShared.pair.on, errOn = inspector.Compile(ps[0], ps[1:]...)
		psShared.pair.off, errOff = inspector.Compile(off[0], off[1:]...)
		psShared.err = errorsJoin(errOn, errOff)
	})
	require.NoError(tb, psShared.err, "compiling the pre-selection profiles")
	return psShared.pair
}

func errorsJoin(errs ...error) error {
	var msgs []string
	for _, err := range errs {
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// Profiles with user rules of the shapes pre-selection models or must keep.
const (
	profUserTransform  = "user-transform"  // @contains after t:lowercase,t:urlDecodeUni; deny
	profUserMultiMatch = "user-multimatch" // multiMatch over a transformation chain, @rx and @pm
	profUserSkip       = "user-skip"       // a skip:1 rule before two rules it counts
	profUserNegated    = "user-negated"    // negated operators
	profExclusions     = "exclusions"      // structured exclusions: static, by path, by method, targets
	profBeyond         = "beyond"          // the inspection beyond CRS on (decoded views, headers, XML, files)
	profBeyondPL4      = "beyond-pl4"      // the same at PL4 in detect mode: every rule runs
)

// psProfiles returns diffProfiles and the user-rule and exclusion profiles.
func psProfiles() []inspector.Profile {
	return append(diffProfiles(),
		inspector.Profile{Name: profBeyond},
		inspector.Profile{Name: profBeyondPL4, ParanoiaLevel: 4, Mode: inspector.ModeDetect},
		inspector.Profile{Name: profUserTransform, BeforeCRS: `SecRule ARGS "@contains evil" "id:10001,phase:2,deny,log,t:none,t:lowercase,t:urlDecodeUni,msg:'evil argument',logdata:'%{MATCHED_VAR_NAME}=%{MATCHED_VAR}'"`},
		inspector.Profile{Name: profUserMultiMatch, BeforeCRS: strings.Join([]string{
			`SecRule ARGS|REQUEST_COOKIES|REQUEST_HEADERS:User-Agent "@rx (?i)union\s+select" "id:10002,phase:2,pass,log,t:none,t:urlDecodeUni,t:htmlEntityDecode,t:replaceComments,t:compressWhitespace,multiMatch,msg:'union select',logdata:'%{MATCHED_VAR}',setvar:'tx.inbound_anomaly_score_pl1=+3'"`,
			`SecRule ARGS_NAMES|REQUEST_HEADERS_NAMES|REQUEST_COOKIES_NAMES "@pm debug admin passwd" "id:10007,phase:2,pass,log,t:none,t:urlDecodeUni,t:lowercase,multiMatch,msg:'suspicious name',logdata:'%{MATCHED_VAR}',setvar:'tx.inbound_anomaly_score_pl1=+2'"`,
		}, "\n")},
		inspector.Profile{Name: profUserSkip, AfterCRS: strings.Join([]string{
			`SecRule REQUEST_HEADERS:User-Agent "@contains curl" "id:10003,phase:1,pass,nolog,t:none,t:lowercase,skip:1"`,
			`SecRule ARGS_GET "@beginsWith 1" "id:10004,phase:1,pass,log,msg:'argument starts with 1',setvar:'tx.inbound_anomaly_score_pl1=+1'"`,
			`SecRule REQUEST_COOKIES|ARGS_GET "@contains <" "id:10005,phase:1,deny,log,msg:'angle bracket',logdata:'%{MATCHED_VAR}'"`,
		}, "\n")},
		inspector.Profile{Name: profUserNegated,
			BeforeCRS: `SecRule ARGS_NAMES "!@rx ^[a-z0-9_.]+$" "id:10008,phase:2,pass,log,t:none,t:lowercase,msg:'odd argument name',logdata:'%{MATCHED_VAR}',setvar:'tx.inbound_anomaly_score_pl1=+1'"`,
			AfterCRS:  `SecRule REQUEST_HEADERS:Accept "!@contains /" "id:10006,phase:1,pass,log,msg:'Accept without a media type',setvar:'tx.inbound_anomaly_score_pl1=+2'"`},
		inspector.Profile{Name: profExclusions, Exclusions: []inspector.Exclusion{
			{RuleIDs: []int{942100}, Targets: []string{"ARGS:q"}},
			{RuleIDs: []int{920350}},
			{Tags: []string{"attack-xss"}, PathPrefix: "/api"},
			{RuleIDs: []int{932160, 930120}, Methods: []string{"POST"}},
			{Tags: []string{"attack-sqli"}, Targets: []string{"REQUEST_COOKIES:session"}, PathPrefix: "/account", Methods: []string{"GET"}},
		}},
	)
}

// psUserRules are the ids of the user rules of psProfiles.
var psUserRules = []int{10001, 10002, 10004, 10005, 10006, 10007, 10008}

// psPreselectOff names the profiles whose own SecLang turns pre-selection
// off: none. excl-target's SecRuleUpdateTargetById only removes a target
// ("!ARGS:..."), which keeps it on (inspector.Profile.preselectOn); its
// verdicts are compared like every other profile's.
var psPreselectOff []string

func psName(profile string) string {
	if profile == "" {
		return inspector.DefaultProfileName
	}
	return profile
}

// psOrdinary reports the requests counted as ordinary traffic: the case
// table's allowed rows, the benchmark's GET and JSON, and the unmutated
// generated bases.
func psOrdinary(name string) bool {
	return strings.HasPrefix(name, "case/allow/") || name == "bench/GET" || name == "bench/JSON1KiB" ||
		strings.HasPrefix(name, "gen/base/")
}

type psResult struct {
	on, off           diffOutcome
	onStats, offStats inspector.PreselectStats
}

// psRunAll inspects every request on both sides, on GOMAXPROCS goroutines.
func psRunAll(pair psPair, reqs []diffRequest) []psResult {
	out := make([]psResult, len(reqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				out[i] = psInspect(pair, reqs[i])
			}
		})
	}
	for i := range reqs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func psInspect(pair psPair, r diffRequest) psResult {
	ctx := context.Background()
	von, errOn := pair.on.Inspect(ctx, r.Req, r.Profile)
	voff, errOff := pair.off.Inspect(ctx, r.Req, r.Profile)
	return psResult{on: outcome(von, errOn), off: outcome(voff, errOff), onStats: von.Preselect, offStats: voff.Preselect}
}

// psDiff describes how a and b differ, matched data included; "" if not.
func psDiff(a, b diffOutcome) string {
	d := diffOutcomes(a, b)
	if d == "" && !slices.Equal(a.Matches, b.Matches) {
		d = fmt.Sprintf("logged data: %v vs %v", a.Matches, b.Matches)
	}
	return d
}

// psSameUnderReruns reruns, on both sides, a request whose two verdicts
// differ in logged data or messages only, and reports whether that is
// Coraza's own nondeterminism rather than pre-selection's: Coraza iterates
// some collections in map order, so which of several matching values a rule
// logs (or names in a message) varies between runs of the same engine. The
// verdicts themselves must not vary (internal/distinctkeys removes the
// transformation cache's dependence on that order): it fails t unless every
// run of both sides has the same verdict (sameVerdict). It reports true when
// each rule whose data or message differed logged different ones in reruns
// of one side alone.
func psSameUnderReruns(t *testing.T, pair psPair, r diffRequest, first psResult) bool {
	t.Helper()
	const runs = 12
	ons, offs := []diffOutcome{first.on}, []diffOutcome{first.off}
	for range runs {
		x := psInspect(pair, r)
		ons, offs = append(ons, x.on), append(offs, x.off)
	}
	for i, o := range append(slices.Clip(ons), offs...) {
		if !sameVerdict(first.on, o) {
			t.Errorf("%s [%s]: meshwaf's verdict varies between runs (run %d of %d, pre-selection on then off): %s",
				r.Name, psName(r.Profile), i, len(ons)+len(offs), psDiff(first.on, o))
			return true // reported
		}
	}
	varies := func(os []diffOutcome, id int) bool {
		seen := map[diffMatch]bool{}
		for _, o := range os {
			for _, m := range o.Matches {
				if m.ID == id {
					seen[m] = true
				}
			}
		}
		return len(seen) > 1
	}
	for i, m := range first.on.Matches {
		if m != first.off.Matches[i] && !varies(ons, m.ID) && !varies(offs, m.ID) {
			return false
		}
	}
	return true
}

// psIDs returns the distinct rule ids of o's matches.
func psIDs(o diffOutcome) []int {
	var ids []int
	for _, m := range o.Matches {
		if !slices.Contains(ids, m.ID) {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// psDescribe renders a request for a failure message.
func psDescribe(r inspector.Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q %s\n", r.Method, r.URI, r.Protocol)
	for _, h := range r.Headers {
		fmt.Fprintf(&b, "  %q: %q\n", h.Name, h.Value)
	}
	if len(r.Body) > 0 {
		body := r.Body
		if len(body) > 2048 {
			body = body[:2048]
		}
		fmt.Fprintf(&b, "  body (%d bytes): %q", len(r.Body), body)
	}
	return b.String()
}

// psFamilies are the CRS attack rule families whose corpus payloads the
// generated requests reuse.
var psFamilies = []int{930, 931, 932, 933, 934, 941, 942, 943, 944}

// psPayloads collects payloads from the CRS corpus requests of an attack
// family that a rule of that family flags with pre-selection off (the
// engine TestDifferential shows equal to stock Coraza): the longest
// argument value of each (query or form), some per family.
func psPayloads(t *testing.T, reqs []diffRequest, res []psResult) []string {
	t.Helper()
	byFamily := map[int]map[string]bool{}
	for i, r := range reqs {
		fam := 0
		if _, err := fmt.Sscanf(r.Name, "crs/%3d", &fam); err != nil || !slices.Contains(psFamilies, fam) || r.Profile != "" {
			continue
		}
		flagged := false
		for _, m := range res[i].off.Matches {
			flagged = flagged || m.ID/1000 == fam
		}
		if !flagged {
			continue
		}
		p := psLongestArg(r.Req)
		if len(p) < 4 || len(p) > 300 {
			continue
		}
		if byFamily[fam] == nil {
			byFamily[fam] = map[string]bool{}
		}
		byFamily[fam][p] = true
	}
	perFamily := 40
	if testing.Short() {
		perFamily = 10
	}
	var out []string
	for _, fam := range psFamilies {
		ps := make([]string, 0, len(byFamily[fam]))
		for p := range byFamily[fam] {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		step := max(1, len(ps)/perFamily)
		for i := 0; i < len(ps); i += step {
			out = append(out, ps[i])
		}
	}
	require.Greater(t, len(out), 50, "payloads taken from the CRS corpus")
	if testing.Short() {
		return out
	}
	for _, fam := range psFamilies {
		require.NotEmpty(t, byFamily[fam], "no payload of rule family %d", fam)
	}
	return out
}

// psLongestArg is the longest decoded argument value of the query or of a
// urlencoded form body.
func psLongestArg(r inspector.Request) string {
	longest := ""
	take := func(s string) {
		for _, kv := range strings.Split(s, "&") {
			_, v, _ := strings.Cut(kv, "=")
			if d, err := psUnescape(v); err == nil && len(d) > len(longest) {
				longest = d
			}
		}
	}
	if _, q, ok := strings.Cut(r.URI, "?"); ok {
		take(q)
	}
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, "content-type") && strings.HasPrefix(strings.ToLower(h.Value), "application/x-www-form-urlencoded") {
			take(string(r.Body))
		}
	}
	return longest
}
