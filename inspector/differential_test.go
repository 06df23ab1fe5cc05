package inspector_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
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
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// TestDifferential is the verdict guard of meshwaf's @rx operator: every
// request of the CRS regression corpus (the request stages of the go-ftw
// tests shipped in the coraza-coreruleset module), of the inspector's case
// table and of the shared benchmark corpus goes through stock Coraza (plain
// coraza.NewWAF with the same Directives, Coraza's own operators) and
// through meshwaf's compiled rule set, and must get the same decision,
// anomaly score, interrupting rule and matches (rule id and message, which
// carries the score; the logged data are compared but only counted, see
// dataDiffers). The CRS
// corpus runs at PL4 in detect mode (every rule runs) and at PL1 block.
//
// Coraza's operator registry is process-global, so the stock side runs in a
// child process of this test binary that never calls Compile (it checks
// that meshwaf's operator is not registered); the parent compiles meshwaf's
// rule set meanwhile. Both sides use the same request driver
// (inspector.InspectWithWAF is the code Engine.Inspect runs).
func TestDifferential(t *testing.T) {
	if out := os.Getenv(diffStockEnv); out != "" {
		stockSide(t, out)
		return
	}
	if inspector.RaceEnabled {
		t.Skip("the differential corpus run takes minutes under the race detector; CI runs it without -race")
	}
	reqs := diffRequests(t)
	if testing.Short() {
		reqs = sample(reqs, 10)
	}

	stockFile := filepath.Join(t.TempDir(), "stock.json")
	child := exec.Command(os.Args[0], "-test.run=^TestDifferential$", "-test.count=1")
	if testing.Short() {
		child.Args = append(child.Args, "-test.short")
	}
	child.Env = append(os.Environ(), diffStockEnv+"="+stockFile)
	var childOut bytes.Buffer
	child.Stdout, child.Stderr = &childOut, &childOut
	require.NoError(t, child.Start())

	rs, err := inspector.Compile(inspector.Profile{}, diffProfiles()[1:]...)
	require.NoError(t, err)
	require.True(t, inspector.RxRegistered(), "meshwaf's @rx is not registered after Compile")
	mine := runAll(reqs, func(r diffRequest) (inspector.Verdict, error) {
		return rs.Inspect(context.Background(), r.Req, r.Profile)
	})

	require.NoError(t, child.Wait(), "stock side:\n%s", childOut.String())
	raw, err := os.ReadFile(stockFile)
	require.NoError(t, err)
	var stock []diffOutcome
	require.NoError(t, json.Unmarshal(raw, &stock))
	require.Len(t, stock, len(reqs))

	changed, matched, data := 0, 0, 0
	for i, r := range reqs {
		if len(stock[i].Matches) > 0 {
			matched++
		}
		if dataDiffers(stock[i], mine[i]) {
			data++
		}
		if d := diffOutcomes(stock[i], mine[i]); d != "" {
			changed++
			if changed <= 20 {
				t.Errorf("%s [%s]: %s", r.Name, r.Profile, d)
			}
		}
	}
	t.Logf("%d requests (%d with matches under stock Coraza), %d changed verdicts; logged data differ in %d (map order)",
		len(reqs), matched, changed, data)
}

const diffStockEnv = "MESHWAF_DIFF_STOCK_OUT"

// stockSide computes the stock verdicts in the child process.
func stockSide(t *testing.T, out string) {
	t.Helper()
	require.False(t, inspector.RxRegistered(), "stock side must run Coraza's own operators")
	reqs := diffRequests(t)
	if testing.Short() {
		reqs = sample(reqs, 10)
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
	res := runAll(reqs, func(r diffRequest) (inspector.Verdict, error) {
		name := r.Profile
		if _, ok := wafs[name]; !ok {
			name = def
		}
		return inspector.InspectWithWAF(wafs[name], profiles[name], r.Req)
	})
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(out, raw, 0o600))
}

const profPL4Detect = "pl4-detect"

// diffProfiles returns the default profile first, then PL4 detect and the
// case table's profiles.
func diffProfiles() []inspector.Profile {
	ps := []inspector.Profile{{}, {Name: profPL4Detect, ParanoiaLevel: 4, Mode: inspector.ModeDetect}}
	return append(ps, inspector.CaseProfiles()...)
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
	if !slices.EqualFunc(a.Matches, b.Matches, func(x, y diffMatch) bool { return x.ID == y.ID && x.Msg == y.Msg }) {
		d = append(d, fmt.Sprintf("matches %v vs %v", a.Matches, b.Matches))
	}
	return strings.Join(d, "; ")
}

// dataDiffers reports matches whose logged data differ. Coraza iterates
// some collections in map order, so which of several matching variables a
// rule's logdata names varies from run to run even with stock Coraza; this
// is counted, not failed.
func dataDiffers(a, b diffOutcome) bool {
	return !slices.Equal(a.Matches, b.Matches)
}

// runAll inspects reqs on GOMAXPROCS goroutines, keeping their order.
func runAll(reqs []diffRequest, inspect func(diffRequest) (inspector.Verdict, error)) []diffOutcome {
	out := make([]diffOutcome, len(reqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				out[i] = outcome(inspect(reqs[i]))
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
	return out
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

// crsCorpus parses every request stage of CRS's go-ftw regression tests.
func crsCorpus(t *testing.T) []diffRequest {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/corazawaf/coraza-coreruleset/v4").Output()
	require.NoError(t, err, "locating the coraza-coreruleset module")
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(dir)), "tests", "*", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no go-ftw tests in the coraza-coreruleset module")
	sort.Strings(files)
	var out []diffRequest
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var ff ftwFile
		require.NoError(t, yaml.Unmarshal(raw, &ff), f)
		for _, tc := range ff.Tests {
			for si, st := range tc.Stages {
				name := fmt.Sprintf("crs/%d-%d/%d", ff.RuleID, tc.TestID, si)
				req, ok := ftwRequest(st.Input)
				if !ok {
					t.Logf("%s: encoded request not parsed, skipped", name)
					continue
				}
				out = append(out, diffRequest{Name: name, Req: req})
			}
		}
	}
	return out
}

func ftwRequest(in ftwInput) (inspector.Request, bool) {
	req := inspector.Request{
		Method: "GET", URI: "/", Protocol: "HTTP/1.1",
		Source:      inspector.Peer{Address: "127.0.0.1", Port: 40000},
		Destination: inspector.Peer{Address: "127.0.0.1", Port: 80},
	}
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
