package inspector_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	txhttp "github.com/corazawaf/coraza/v3/http"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody"
	"github.com/meshwaf/meshwaf/inspector/internal/rx"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// TestDifferential compares meshwaf with stock Coraza, each driven its own
// way, over every request of the CRS regression corpus (the request stages
// of the go-ftw tests shipped in the coraza-coreruleset module), of the
// inspector's case table and of the shared benchmark corpus. The CRS corpus
// runs at PL4 in detect mode (every rule runs) and at PL1 block.
//
//   - meshwaf: the compiled rule set (meshwaf's @rx, meshwaf's request
//     driver, the verdict RuleSet.Inspect returns).
//   - stock: plain coraza.NewWAF with the same Directives and Coraza's own
//     operators (and meshwaf's GRPC body processor, which Coraza lacks),
//     driven by Coraza's own net/http middleware
//     (coraza/v3/http.WrapHandler, which runs processRequest: connection,
//     URI, headers with Host, request headers, body read from the request,
//     request body) over a net/http request carrying the same facts. The
//     expected verdict is computed here from that transaction: the
//     interruption (or, in detect mode, the one Coraza would have made),
//     TX:blocking_inbound_anomaly_score, the logged matched rules, and
//     meshwaf's guards from ARGUMENTS_LIMIT_REACHED and
//     INBOUND_DATA_ERROR (stockVerdict).
//
// They must agree on error, decision, status, anomaly score, interrupting
// rule and matched rules (id and message; the logged data are compared but
// only counted, see dataDiffers).
//
// Coraza's operator registry is process-global, so the stock side runs in a
// child process of this test binary that never calls Compile (it checks
// that meshwaf's operator is not registered); the parent compiles meshwaf's
// rule set meanwhile.
func TestDifferential(t *testing.T) {
	if out := os.Getenv(diffStockEnv); out != "" {
		stockSide(t, out)
		return
	}
	if inspector.RaceEnabled {
		t.Skip("the differential corpus run takes minutes under the race detector; CI runs it without -race")
	}
	reqs := diffRequests(t)
	want := wantDiffRequests(t)
	require.Len(t, reqs, want, "requests built from the corpus")
	require.GreaterOrEqual(t, want, minDiffRequests, "the corpus shrank")
	if testing.Short() {
		reqs = sample(reqs, 10)
	}
	accelBefore := rx.AccelAnswers()

	wait := startStock(t, nil)
	ps := diffProfiles()
	rs, err := inspector.Compile(ps[0], ps[1:]...)
	require.NoError(t, err)
	require.True(t, rx.Registered(), "meshwaf's @rx is not registered after Compile")
	inspect := func(r diffRequest) diffOutcome {
		return outcome(rs.Inspect(context.Background(), r.Req, r.Profile))
	}
	mine := runAll(reqs, inspect)
	stock := wait()
	require.Len(t, stock, len(reqs), "requests the stock side ran")
	stockVaried := stockVaries(t, reqs, stock, mine, inspect)

	changed, matched, data, compared := 0, 0, 0, 0
	guards := map[int]int{}
	for i, r := range reqs {
		compared++
		if len(stock[i].Matches) > 0 {
			matched++
		}
		for _, m := range stock[i].Matches {
			if m.ID == inspector.RuleArgumentsLimit || m.ID == inspector.RulePartialBody {
				guards[m.ID]++
			}
		}
		if dataDiffers(stock[i], mine[i]) {
			data++
		}
		if d := diffOutcomes(stock[i], mine[i]); d != "" && !stockVaried[i] {
			changed++
			if changed <= 20 {
				t.Errorf("%s [%s]: %s", r.Name, r.Profile, d)
			}
		}
	}
	require.Equal(t, len(reqs), compared)
	if !testing.Short() {
		require.Equal(t, want, compared, "requests compared")
	}
	require.Positive(t, matched, "no request matched a rule: the corpus tests nothing")
	if !testing.Short() {
		require.Positive(t, guards[inspector.RuleArgumentsLimit], "no request was expected to reach guard 99001")
		require.Positive(t, guards[inspector.RulePartialBody], "no request was expected to reach guard 99002")
	}
	// In the re2_cgo build the accelerator must have answered (a library
	// that fails to load would leave every value to Go's regexp).
	if strings.HasPrefix(rx.Accelerator(), "re2-cgo") {
		require.Greater(t, rx.AccelAnswers(), accelBefore, "the RE2 accelerator never answered")
	}
	t.Logf("%d requests (%d with matches under stock Coraza, %d and %d expected to reach guards 99001 and 99002), %d changed verdicts; "+
		"%d where stock Coraza's own verdict varies between runs (its transformation cache) and meshwaf's did not; logged data differ in %d (map order); %s; RE2 answers %d",
		compared, matched, guards[inspector.RuleArgumentsLimit], guards[inspector.RulePartialBody], changed, len(stockVaried), data,
		rx.Accelerator(), rx.AccelAnswers()-accelBefore)
}

// minDiffRequests is a floor under the corpus size: CRS 4.25's 4,680
// request stages twice, the case table and the benchmark requests.
const minDiffRequests = 2*4680 + 50

// TestSeedIsCorpusSeed: the case table's seed row and the benchmark
// corpus define the brief's seed request separately; they must agree.
func TestSeedIsCorpusSeed(t *testing.T) {
	n := 0
	for _, c := range inspector.DiffCases() {
		if strings.HasPrefix(c.Name, "deny/sqli/query-seed") {
			n++
			require.Equal(t, corpus.SeedSQLiURI, c.Request.URI, c.Name)
		}
	}
	require.Positive(t, n, "no seed row in the case table")
}

const (
	diffStockEnv      = "MESHWAF_DIFF_STOCK_OUT"
	diffStockRerunEnv = "MESHWAF_DIFF_STOCK_RERUN" // indices of the requests to rerun, comma-separated
	diffReruns        = 12                         // runs of each request whose verdicts differed
)

// startStock starts the stock side in a child process, over every request
// or, when rerun is not nil, over those of these indices, each diffReruns
// times in a row; the function it returns waits for the child's verdicts.
func startStock(t *testing.T, rerun []int) func() []diffOutcome {
	t.Helper()
	stockFile := filepath.Join(t.TempDir(), "stock.json")
	child := exec.Command(os.Args[0], "-test.run=^TestDifferential$", "-test.count=1")
	if testing.Short() {
		child.Args = append(child.Args, "-test.short")
	}
	child.Env = append(os.Environ(), diffStockEnv+"="+stockFile)
	if rerun != nil {
		idx := make([]string, len(rerun))
		for i, n := range rerun {
			idx[i] = strconv.Itoa(n)
		}
		child.Env = append(child.Env, diffStockRerunEnv+"="+strings.Join(idx, ","))
	}
	var childOut bytes.Buffer
	child.Stdout, child.Stderr = &childOut, &childOut
	require.NoError(t, child.Start())
	return func() []diffOutcome {
		require.NoError(t, child.Wait(), "stock side:\n%s", childOut.String())
		raw, err := os.ReadFile(stockFile)
		require.NoError(t, err)
		var stock []diffOutcome
		require.NoError(t, json.Unmarshal(raw, &stock))
		return stock
	}
}

// stockVaries reruns, on both sides, the requests whose verdicts differ
// (diffReruns times each) and returns those where some run of stock Coraza
// agrees with some run of meshwaf: stock Coraza 3.8.1's verdict varies
// between runs (its transformation cache can hand a rule another value's
// transformed text, depending on map order; meshwaf removes that, see
// internal/distinctkeys), and both sides' messages can name a different
// matching variable. meshwaf's verdict must not vary: t fails if any rerun
// of meshwaf differs from its first run but for data and messages
// (sameVerdict).
func stockVaries(t *testing.T, reqs []diffRequest, stock, mine []diffOutcome, inspect func(diffRequest) diffOutcome) map[int]bool {
	t.Helper()
	var idx []int
	for i := range reqs {
		if diffOutcomes(stock[i], mine[i]) != "" {
			idx = append(idx, i)
		}
	}
	out := map[int]bool{}
	if len(idx) == 0 || len(idx) > 100 { // many differences: not map order; reported as changed
		return out
	}
	stockRuns := startStock(t, idx)()
	require.Len(t, stockRuns, len(idx)*diffReruns, "stock reruns")
	for k, i := range idx {
		mineRuns := []diffOutcome{mine[i]}
		for range diffReruns {
			m := inspect(reqs[i])
			if !sameVerdict(mine[i], m) {
				t.Errorf("%s [%s]: meshwaf's verdict varies between runs: %s", reqs[i].Name, reqs[i].Profile, diffOutcomes(mine[i], m))
				return out
			}
			mineRuns = append(mineRuns, m)
		}
		agrees := false
		for _, st := range stockRuns[k*diffReruns : (k+1)*diffReruns] {
			for _, m := range mineRuns {
				agrees = agrees || diffOutcomes(st, m) == ""
			}
		}
		if agrees {
			out[i] = true
			t.Logf("%s [%s]: stock Coraza's verdict varies between runs; meshwaf's does not: %s", reqs[i].Name, reqs[i].Profile, diffOutcomes(stock[i], mine[i]))
		}
	}
	return out
}

// stockSide computes the stock verdicts in the child process.
func stockSide(t *testing.T, out string) {
	t.Helper()
	require.False(t, rx.Registered(), "stock side must run Coraza's own operators")
	// Stock Coraza has no body processor for gRPC: both sides use
	// meshwaf's, so that gRPC bodies are compared on the rules.
	grpcbody.Register()
	reqs := diffRequests(t)
	if testing.Short() {
		reqs = sample(reqs, 10)
	}
	if rerun := os.Getenv(diffStockRerunEnv); rerun != "" {
		var sel []diffRequest
		for _, f := range strings.Split(rerun, ",") {
			i, err := strconv.Atoi(f)
			require.NoError(t, err)
			for range diffReruns {
				sel = append(sel, reqs[i])
			}
		}
		reqs = sel
	}
	wafs := map[string]coraza.WAF{}
	profiles := map[string]inspector.Profile{}
	for _, p := range diffProfiles() {
		p = p.WithDefaults()
		waf, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(inspector.Directives(p)))
		require.NoError(t, err)
		wafs[p.Name], profiles[p.Name] = waf, p
	}
	def := inspector.Profile{}.WithDefaults().Name
	res := runAll(reqs, func(r diffRequest) diffOutcome {
		name := r.Profile
		if _, ok := wafs[name]; !ok {
			name = def
		}
		return stockVerdict(t, wafs[name], profiles[name], r.Req)
	})
	require.False(t, rx.Registered(), "stock side must run Coraza's own operators")
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(out, raw, 0o600))
}

// stockVerdict runs req through Coraza's net/http middleware over waf and
// computes the verdict meshwaf's contract gives for what the transaction
// found: a request-phase interruption (or, in detect mode, the
// interruption Coraza would have made) or a guard decides; a denial
// answers the profile's denyStatus; the guards are meshwaf's own rules,
// 99001 when Coraza dropped arguments over SecArgumentsLimit
// (ARGUMENTS_LIMIT_REACHED) and 99002 when the body was cut: by the proxy,
// or at the body limit (INBOUND_DATA_ERROR) with more bytes than the limit
// (Coraza also flags a body of exactly the limit).
func stockVerdict(t *testing.T, waf coraza.WAF, p inspector.Profile, req inspector.Request) diffOutcome {
	t.Helper()
	run := &stockRun{waf: waf}
	hreq := httpRequest(t, req)
	rec := httptest.NewRecorder()
	txhttp.WrapHandler(run, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		run.passed = true
		run.capture()
	})).ServeHTTP(rec, hreq)
	st := run.state
	switch {
	case st == nil:
		return diffOutcome{Err: "stock: no transaction"}
	case !run.passed && st.interruption == nil:
		return diffOutcome{Err: "stock: the middleware failed to process the request"}
	case run.passed && st.interruption != nil:
		return diffOutcome{Err: "stock: the handler ran after an interruption"}
	}

	o := diffOutcome{Decision: inspector.Allow, Score: st.score}
	if !p.AllowArgumentsOverLimit && st.argsLimit == "1" {
		o.Matches = append(o.Matches, diffMatch{ID: inspector.RuleArgumentsLimit})
	}
	if !p.AllowPartialBody && (req.BodyTruncated || st.inboundError == "1" && len(req.Body) > p.RequestBodyLimit) {
		o.Matches = append(o.Matches, diffMatch{ID: inspector.RulePartialBody})
	}
	guard := 0
	if len(o.Matches) > 0 {
		guard = o.Matches[0].ID
	}
	o.Matches = append(o.Matches, st.matches...)
	sort.SliceStable(o.Matches, func(i, j int) bool { return o.Matches[i].ID < o.Matches[j].ID })

	it := st.interruption
	if it == nil {
		it = st.detectOnly
	}
	switch {
	case it != nil:
		o.Interrupting = it.RuleID
	case guard != 0:
		o.Interrupting = guard
	default:
		return o
	}
	if p.Mode == inspector.ModeDetect {
		o.Decision = inspector.Detect
	} else {
		o.Decision, o.Status = inspector.Deny, p.DenyStatus
	}
	return o
}

// stockRun is the WAF handed to Coraza's middleware for one request: it
// creates the transaction and keeps what it found after the request phases
// (in the handler when the request passed, before phase 5 when it was
// interrupted).
type stockRun struct {
	waf    coraza.WAF
	tx     types.Transaction
	passed bool // the wrapped handler ran: no interruption
	state  *stockState
}

type stockState struct {
	interruption *types.Interruption
	detectOnly   *types.Interruption
	score        int
	argsLimit    string
	inboundError string
	matches      []diffMatch
}

func (r *stockRun) NewTransaction() types.Transaction {
	r.tx = &stockTx{Transaction: r.waf.NewTransaction(), run: r}
	return r.tx
}

func (r *stockRun) NewTransactionWithID(id string) types.Transaction {
	r.tx = &stockTx{Transaction: r.waf.NewTransactionWithID(id), run: r}
	return r.tx
}

func (r *stockRun) capture() {
	if r.state != nil {
		return
	}
	tx := r.tx.(*stockTx).Transaction
	st := &stockState{interruption: tx.Interruption()}
	if d, ok := tx.(interface{ DetectionOnlyInterruption() *types.Interruption }); ok {
		st.detectOnly = d.DetectionOnlyInterruption()
	}
	if ts, ok := tx.(plugintypes.TransactionState); ok {
		vars := ts.Variables()
		if s := vars.TX().Get("blocking_inbound_anomaly_score"); len(s) > 0 {
			st.score, _ = strconv.Atoi(s[0])
		}
		st.argsLimit = vars.ArgumentsLimitReached().Get()
		st.inboundError = vars.InboundDataError().Get()
	}
	for _, mr := range tx.MatchedRules() {
		if mr.Rule().ID() == 0 || mr.Message() == "" {
			continue
		}
		if l, ok := mr.(interface{ Log() bool }); ok && !l.Log() {
			continue // nolog rules
		}
		st.matches = append(st.matches, diffMatch{ID: mr.Rule().ID(), Msg: mr.Message(), Data: inspector.Truncate(mr.Data(), inspector.MaxMatchData)})
	}
	r.state = st
}

// stockTx records the transaction's findings before phase 5 runs.
type stockTx struct {
	types.Transaction
	run *stockRun
}

func (tx *stockTx) ProcessLogging() {
	tx.run.capture()
	tx.Transaction.ProcessLogging()
}

// httpRequest is req as net/http's server hands it to a handler: Host
// moved to Request.Host, Transfer-Encoding to Request.TransferEncoding,
// header names canonical, the body a reader. The request target is kept
// byte for byte (URL.Opaque, as net/http's client sends a raw path, when
// parsing would re-encode it): the middleware passes URL.String() to
// ProcessURI, and a proxy in front of meshwaf passes the path as sent.
func httpRequest(t *testing.T, req inspector.Request) *http.Request {
	t.Helper()
	hr := &http.Request{
		Method: req.Method, Proto: req.Protocol, RequestURI: req.URI,
		Header: http.Header{}, Host: req.Host, Body: http.NoBody,
		RemoteAddr: net.JoinHostPort(req.Source.Address, strconv.Itoa(req.Source.Port)),
	}
	hr.ProtoMajor, hr.ProtoMinor, _ = http.ParseHTTPVersion(req.Protocol)
	if u, err := url.ParseRequestURI(req.URI); err == nil && u.String() == req.URI {
		hr.URL = u
	} else {
		path, query, hasQuery := strings.Cut(req.URI, "?")
		hr.URL = &url.URL{Opaque: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	}
	if hr.URL.String() != req.URI {
		t.Errorf("request target %q became %q", req.URI, hr.URL.String())
	}
	hostMoved := false
	for _, h := range req.Headers {
		switch {
		case !hostMoved && req.Host != "" && strings.EqualFold(h.Name, "host") && h.Value == req.Host:
			hostMoved = true
		case strings.EqualFold(h.Name, "transfer-encoding"):
			hr.TransferEncoding = append(hr.TransferEncoding, h.Value)
		default:
			hr.Header.Add(h.Name, h.Value)
		}
	}
	if len(req.Body) > 0 {
		hr.Body, hr.ContentLength = io.NopCloser(bytes.NewReader(req.Body)), int64(len(req.Body))
	}
	return hr
}

const profPL4Detect = "pl4-detect"

// diffProfiles returns the default profile first, then PL4 detect and the
// case table's profiles, all with the inspection beyond CRS off
// (Profile.CRSOnly, but for the rule pack): stock Coraza has none of it.
func diffProfiles() []inspector.Profile {
	ps := []inspector.Profile{{}, {Name: profPL4Detect, ParanoiaLevel: 4, Mode: inspector.ModeDetect}}
	ps = append(ps, inspector.CaseProfiles()...)
	for i := range ps {
		pack := ps[i].RulePack // SecLang: stock Coraza loads the pack too
		ps[i] = ps[i].CRSOnly()
		ps[i].RulePack = pack
	}
	return ps
}

type diffRequest struct {
	Name    string
	Profile string
	Req     inspector.Request
}

type diffMatch struct {
	ID   int
	Msg  string
	Data string
}

type diffOutcome struct {
	Err          string `json:",omitempty"`
	Decision     inspector.Decision
	Status       int
	Score        int
	Interrupting int
	Matches      []diffMatch
}

func outcome(v inspector.Verdict, err error) diffOutcome {
	if err != nil {
		return diffOutcome{Err: err.Error()}
	}
	o := diffOutcome{Decision: v.Decision, Status: v.Status, Score: v.AnomalyScore, Interrupting: v.InterruptingRule}
	for _, m := range v.Matches {
		o.Matches = append(o.Matches, diffMatch{ID: m.ID, Msg: m.Msg, Data: m.Data})
	}
	return o
}

func diffOutcomes(a, b diffOutcome) string {
	var d []string
	if a.Err != b.Err {
		d = append(d, fmt.Sprintf("error %q vs %q", a.Err, b.Err))
	}
	if a.Decision != b.Decision || a.Status != b.Status || a.Interrupting != b.Interrupting {
		d = append(d, fmt.Sprintf("decision %s/%d by %d vs %s/%d by %d",
			a.Decision, a.Status, a.Interrupting, b.Decision, b.Status, b.Interrupting))
	}
	if a.Score != b.Score {
		d = append(d, fmt.Sprintf("score %d vs %d", a.Score, b.Score))
	}
	if !slices.EqualFunc(a.Matches, b.Matches, sameMatch) {
		d = append(d, fmt.Sprintf("matches %v vs %v", a.Matches, b.Matches))
	}
	return strings.Join(d, "; ")
}

// sameMatch compares rule id and message; the guards' messages are
// meshwaf's own text, not expected from the stock side.
func sameMatch(x, y diffMatch) bool {
	if x.ID == inspector.RuleArgumentsLimit || x.ID == inspector.RulePartialBody {
		return x.ID == y.ID
	}
	return x.ID == y.ID && x.Msg == y.Msg
}

// sameVerdict reports whether a and b agree on error, decision, status,
// anomaly score, interrupting rule and the ids of the matched rules: all
// but the logged data and messages, which can name a different one of
// several matching variables from run to run (map order).
func sameVerdict(a, b diffOutcome) bool {
	strip := func(o diffOutcome) diffOutcome {
		o.Matches = slices.Clone(o.Matches)
		for i := range o.Matches {
			o.Matches[i].Data, o.Matches[i].Msg = "", ""
		}
		return o
	}
	return diffOutcomes(strip(a), strip(b)) == ""
}

// dataDiffers reports matches whose logged data differ. Coraza iterates
// some collections in map order, so which of several matching variables a
// rule's logdata names varies from run to run even with stock Coraza; this
// is counted, not failed.
func dataDiffers(a, b diffOutcome) bool {
	return !slices.EqualFunc(a.Matches, b.Matches, func(x, y diffMatch) bool { return sameMatch(x, y) && x.Data == y.Data })
}

// runAll inspects reqs on GOMAXPROCS goroutines, keeping their order.
func runAll(reqs []diffRequest, inspect func(diffRequest) diffOutcome) []diffOutcome {
	out := make([]diffOutcome, len(reqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				out[i] = inspect(reqs[i])
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

func sample(reqs []diffRequest, every int) []diffRequest {
	var out []diffRequest
	for i, r := range reqs {
		if i%every == 0 {
			out = append(out, r)
		}
	}
	return out
}

// diffRequests is the corpus: CRS stages at PL1 block and PL4 detect, the
// case table, the benchmark requests at both levels.
func diffRequests(t *testing.T) []diffRequest {
	t.Helper()
	var out []diffRequest
	for _, r := range crsCorpus(t) {
		out = append(out, diffRequest{Name: r.Name, Req: r.Req}, diffRequest{Name: r.Name, Profile: profPL4Detect, Req: r.Req})
	}
	for _, c := range inspector.DiffCases() {
		out = append(out, diffRequest{Name: "case/" + c.Name, Profile: c.Profile, Req: c.Request})
	}
	for _, b := range corpus.Bench {
		out = append(out, diffRequest{Name: "bench/" + b.Name, Req: b.Request()},
			diffRequest{Name: "bench/" + b.Name, Profile: profPL4Detect, Req: b.Request()})
	}
	return append(out, guardRequests(t)...)
}

// guardRequests reach meshwaf's guards (99001, 99002) and the limits
// around them, on the case table's profiles for them.
func guardRequests(t *testing.T) []diffRequest {
	t.Helper()
	args := func(n, sqliAt int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte('&')
			}
			if i == sqliAt {
				fmt.Fprintf(&b, "a%d=%s", i, url.QueryEscape("' UNION SELECT 1, version() limit 1,1--"))
			} else {
				fmt.Fprintf(&b, "a%d=v%d", i, i)
			}
		}
		return b.String()
	}
	post := func(ct, body string) inspector.Request {
		r := ftwBase()
		r.Method, r.URI, r.Host, r.Body = "POST", "/notes", "shop.example", []byte(body)
		r.Headers = []inspector.Header{{Name: "Host", Value: r.Host}, {Name: "Content-Type", Value: ct},
			{Name: "Content-Length", Value: strconv.Itoa(len(body))}}
		return r
	}
	getURI := func(uri string) inspector.Request {
		r := ftwBase()
		r.URI, r.Host = uri, "shop.example"
		r.Headers = []inspector.Header{{Name: "Host", Value: r.Host}}
		return r
	}
	form := func(n int) string { return "note=" + strings.Repeat("a", n-len("note=")) }
	truncated := post("application/x-www-form-urlencoded", "comment=hello")
	truncated.BodyTruncated = true
	rows := []diffRequest{
		{Name: "guard/args-over-limit", Req: getURI("/?" + args(1001, -1))},
		{Name: "guard/args-at-limit", Req: getURI("/?" + args(1000, -1))},
		{Name: "guard/args-sqli-past-limit", Req: getURI("/?" + args(1500, 1199))},
		{Name: "guard/args-sqli-past-limit", Profile: "allow-args", Req: getURI("/?" + args(1500, 1199))},
		{Name: "guard/args-over-limit", Profile: "detect", Req: getURI("/?" + args(1001, -1))},
		{Name: "guard/form-args-over-limit", Req: post("application/x-www-form-urlencoded", args(1200, -1))},
		{Name: "guard/body-over-limit", Profile: "small-body", Req: post("application/x-www-form-urlencoded", form(4096))},
		{Name: "guard/body-over-limit", Profile: "small-body-partial", Req: post("application/x-www-form-urlencoded", form(4096))},
		{Name: "guard/body-at-limit", Profile: "small-body", Req: post("application/x-www-form-urlencoded", form(1024))},
		{Name: "guard/body-under-limit", Profile: "small-body", Req: post("application/x-www-form-urlencoded", form(1023))},
		{Name: "guard/json-over-limit", Profile: "small-body", Req: post("application/json", `{"note":"`+strings.Repeat("a", 2000)+`"}`)},
		{Name: "guard/json-over-limit", Profile: "small-body-partial", Req: post("application/json", `{"note":"`+strings.Repeat("a", 2000)+`"}`)},
		{Name: "guard/body-truncated", Req: truncated},
		{Name: "guard/body-truncated", Profile: "allow-partial", Req: truncated},
		{Name: "guard/body-truncated", Profile: "detect", Req: truncated},
	}
	known := map[string]bool{"": true}
	for _, p := range diffProfiles() {
		known[p.Name] = true
	}
	for _, r := range rows {
		require.True(t, known[r.Profile], "%s: no profile %q", r.Name, r.Profile)
	}
	return rows
}

// ftwFile is the part of a go-ftw test file that describes requests.
type ftwFile struct {
	RuleID int `yaml:"rule_id"`
	Tests  []struct {
		TestID int `yaml:"test_id"`
		Stages []struct {
			Input ftwInput `yaml:"input"`
		} `yaml:"stages"`
	} `yaml:"tests"`
}

type ftwInput struct {
	Method              *string           `yaml:"method"`
	URI                 *string           `yaml:"uri"`
	Version             *string           `yaml:"version"`
	Headers             map[string]string `yaml:"headers"`
	Data                *string           `yaml:"data"`
	EncodedRequest      string            `yaml:"encoded_request"`
	AutocompleteHeaders *bool             `yaml:"autocomplete_headers"`
}

// wantDiffRequests counts, from the corpus files themselves, the requests
// diffRequests must build: every request stage of every go-ftw test (twice:
// PL1 block and PL4 detect), every case row, every benchmark request twice.
func wantDiffRequests(t *testing.T) int {
	t.Helper()
	stages := 0
	for _, f := range crsTestFiles(t) {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var doc struct {
			Tests []struct {
				Stages []yaml.Node `yaml:"stages"`
			} `yaml:"tests"`
		}
		require.NoError(t, yaml.Unmarshal(raw, &doc), f)
		for _, tc := range doc.Tests {
			stages += len(tc.Stages)
		}
	}
	return 2*stages + len(inspector.DiffCases()) + 2*len(corpus.Bench) + len(guardRequests(t))
}

// crsTestFiles returns the go-ftw test files of CRS and of meshwaf's rule
// pack.
func crsTestFiles(t *testing.T) []string {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/corazawaf/coraza-coreruleset/v4").Output()
	require.NoError(t, err, "locating the coraza-coreruleset module")
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(dir)), "tests", "*", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no go-ftw tests in the coraza-coreruleset module")
	sort.Strings(files)
	// meshwaf's rule pack's tests, in the same format.
	pack, err := filepath.Glob(filepath.Join("rulepack", "tests", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, pack, "no go-ftw tests in rulepack/tests")
	return append(files, pack...)
}

// crsCorpus parses every request stage of CRS's go-ftw regression tests
// and of the rule pack's.
func crsCorpus(t *testing.T) []diffRequest {
	t.Helper()
	var out []diffRequest
	for _, f := range crsTestFiles(t) {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var ff ftwFile
		require.NoError(t, yaml.Unmarshal(raw, &ff), f)
		for _, tc := range ff.Tests {
			for si, st := range tc.Stages {
				name := fmt.Sprintf("crs/%d-%d/%d", ff.RuleID, tc.TestID, si)
				req, ok := ftwRequest(st.Input)
				if !ok {
					t.Errorf("%s: encoded request not parsed", name)
					continue
				}
				out = append(out, diffRequest{Name: name, Req: req})
			}
		}
	}
	return out
}

// ftwBase is a GET of / over HTTP/1.1 between two loopback peers.
func ftwBase() inspector.Request {
	return inspector.Request{
		Method: "GET", URI: "/", Protocol: "HTTP/1.1",
		Source:      inspector.Peer{Address: "127.0.0.1", Port: 40000},
		Destination: inspector.Peer{Address: "127.0.0.1", Port: 80},
	}
}

func ftwRequest(in ftwInput) (inspector.Request, bool) {
	req := ftwBase()
	if in.EncodedRequest != "" {
		return rawRequest(req, in.EncodedRequest)
	}
	if in.Method != nil {
		req.Method = *in.Method
	}
	if in.URI != nil {
		req.URI = *in.URI
	}
	if in.Version != nil {
		req.Protocol = *in.Version
	}
	names := make([]string, 0, len(in.Headers))
	for n := range in.Headers {
		names = append(names, n)
	}
	sort.Strings(names)
	hasLength := false
	for _, n := range names {
		req.Headers = append(req.Headers, inspector.Header{Name: n, Value: in.Headers[n]})
		switch strings.ToLower(n) {
		case "host":
			req.Host = in.Headers[n]
		case "content-length":
			hasLength = true
		}
	}
	if in.Data != nil {
		req.Body = []byte(*in.Data)
		if !hasLength && (in.AutocompleteHeaders == nil || *in.AutocompleteHeaders) && len(req.Body) > 0 {
			req.Headers = append(req.Headers, inspector.Header{Name: "Content-Length", Value: strconv.Itoa(len(req.Body))})
		}
	}
	return req, true
}

// rawRequest parses a go-ftw encoded_request (base64 of the raw bytes).
func rawRequest(req inspector.Request, enc string) (inspector.Request, bool) {
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return req, false
	}
	head, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	parts := strings.SplitN(lines[0], " ", 3)
	if len(parts) != 3 {
		return req, false
	}
	req.Method, req.URI, req.Protocol = parts[0], parts[1], parts[2]
	for _, l := range lines[1:] {
		n, v, ok := strings.Cut(l, ":")
		if !ok {
			return req, false
		}
		v = strings.TrimSpace(v)
		req.Headers = append(req.Headers, inspector.Header{Name: n, Value: v})
		if strings.EqualFold(n, "host") {
			req.Host = v
		}
	}
	req.Body = body
	return req, true
}
