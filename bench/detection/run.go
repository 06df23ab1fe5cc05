package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// check is one item in one placement, sent to every profile.
type check struct {
	item  Item
	place string
	req   inspector.Request
}

// outcome is what one profile made of one check.
type outcome struct {
	denied bool
	rules  []int // rules that matched (scoring and blocking evaluation rules left out)
}

// checker sends one request to one profile.
type checker func(ctx context.Context, req inspector.Request, profile string) (outcome, error)

// checksFor builds every applicable check of items in ps.
func checksFor(items []Item, ps []Placement) []check {
	var out []check
	for _, it := range items {
		for _, p := range ps {
			if !p.applies(it) {
				continue
			}
			if req, ok := p.request(it); ok {
				out = append(out, check{item: it, place: p.Name, req: req})
			}
		}
	}
	return out
}

// run sends every check to every profile with workers goroutines and
// returns the outcomes, [check][profile].
func run(ctx context.Context, checks []check, profiles []string, c checker, workers int) ([][]outcome, error) {
	out := make([][]outcome, len(checks))
	idx := make(chan int)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				row := make([]outcome, len(profiles))
				for j, p := range profiles {
					o, err := c(ctx, checks[i].req, p)
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s %s %q in %s: %w", checks[i].item.Class, checks[i].item.Encoding, truncate(checks[i].item.Text), checks[i].place, err))
						mu.Unlock()
					}
					row[j] = o
				}
				out[i] = row
			}
		}()
	}
	for i := range checks {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d checks failed, first: %w", len(errs), errs[0])
	}
	return out, nil
}

func truncate(s string) string {
	if len(s) <= 60 {
		return s
	}
	for i := 60; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}

// scoringRule reports whether id is a CRS bookkeeping rule (anomaly
// evaluation, reporting) rather than a detection.
func scoringRule(id int) bool {
	return id >= 949000 && id < 950000 || id >= 959000 && id < 960000 || id >= 980000 && id < 981000
}

func detections(ids []int) []int {
	out := make([]int, 0, len(ids))
	for _, id := range ids {
		if !scoringRule(id) {
			out = append(out, id)
		}
	}
	return out
}

// inProcess checks with the RuleSet directly.
func inProcess(rs *inspector.RuleSet) checker {
	return func(ctx context.Context, req inspector.Request, profile string) (outcome, error) {
		v, err := rs.Inspect(ctx, req, profile)
		if err != nil {
			return outcome{}, err
		}
		return outcome{denied: !v.Allowed(), rules: detections(v.RuleIDs())}, nil
	}
}

// viaGRPC serves rs with meshwaf's ext_authz server on 127.0.0.1 and
// checks through it, naming the profile in the route's context
// extensions. stop ends the server.
func viaGRPC(rs *inspector.RuleSet, inFlight int) (c checker, stop func(), err error) {
	sel, err := extauthz.NewSelector(ProfileDefault, rs.Profiles(), nil)
	if err != nil {
		return nil, nil, err
	}
	srv, err := extauthz.NewServer(extauthz.Options{Engine: rs, Selector: sel,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
		Limits: extauthz.Limits{MaxInFlight: inFlight, MaxBodyBytes: 64 << 20, QueueWait: 1 << 40}})
	if err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		g.Stop()
		return nil, nil, err
	}
	client := authv3.NewAuthorizationClient(conn)
	c = func(ctx context.Context, req inspector.Request, profile string) (outcome, error) {
		cr := corpus.CheckRequest(req)
		h := cr.GetAttributes().GetRequest().GetHttp()
		if !utf8.Valid(req.Body) || strings.HasPrefix(contentType(req), "application/grpc") {
			h.RawBody, h.Body = req.Body, "" // as Envoy's pack_as_bytes sends it
		}
		h.Headers["x-envoy-auth-partial-body"] = "false"
		cr.Attributes.ContextExtensions = map[string]string{extauthz.ContextKeyProfile: profile}
		resp, err := client.Check(ctx, cr)
		if err != nil {
			return outcome{}, err
		}
		var ids []int
		for _, s := range strings.Split(resp.GetDynamicMetadata().GetFields()[extauthz.MetaRuleIDs].GetStringValue(), ",") {
			if id, err := strconv.Atoi(s); err == nil {
				ids = append(ids, id)
			}
		}
		if got := resp.GetDynamicMetadata().GetFields()[extauthz.MetaProfile].GetStringValue(); got != profile {
			return outcome{}, fmt.Errorf("checked with profile %q, want %q", got, profile)
		}
		return outcome{denied: resp.GetDeniedResponse() != nil, rules: detections(ids)}, nil
	}
	return c, func() { _ = conn.Close(); g.Stop() }, nil
}

func contentType(r inspector.Request) string {
	for _, h := range r.Headers {
		if strings.EqualFold(h.Name, "content-type") {
			return h.Value
		}
	}
	return ""
}

// Rate is hits out of n checks.
type Rate struct {
	Hits int `json:"hits"`
	N    int `json:"n"`
}

// Percent is 100·Hits/N, or -1 for no checks.
func (r Rate) Percent() float64 {
	if r.N == 0 {
		return -1
	}
	return 100 * float64(r.Hits) / float64(r.N)
}

// Report is what a run measured: for attacks, detected checks; for benign
// items, denied ones (false positives), per profile.
type Report struct {
	Split     Split        `json:"split"`
	Transport string       `json:"transport"`
	Profiles  []string     `json:"profiles"`
	Items     map[Kind]int `json:"items"`
	// Detection and FalsePositive: dimension ("class", "encoding",
	// "placement", "overall") → value → profile → rate. Detection by class
	// counts raw payloads only; by encoding, every class.
	Detection     map[string]map[string]map[string]Rate `json:"detection"`
	FalsePositive map[string]map[string]map[string]Rate `json:"falsePositive"`
	// FPRules: profile → rule id → benign checks denied in which it matched.
	FPRules map[string]map[int]int `json:"fpRules"`
	// DetRules: profile → rule id → attack checks denied in which it
	// matched; SoleRules: in which it was the only detection rule.
	DetRules  map[string]map[int]int `json:"detRules"`
	SoleRules map[string]map[int]int `json:"soleRules"`
	// Misses: profile → class/placement → attack checks not detected
	// (raw payloads).
	Misses map[string]map[string]int `json:"misses"`
}

func newReport(split Split, transport string, profiles []string) *Report {
	r := &Report{Split: split, Transport: transport, Profiles: profiles, Items: map[Kind]int{},
		Detection: map[string]map[string]map[string]Rate{}, FalsePositive: map[string]map[string]map[string]Rate{},
		FPRules: map[string]map[int]int{}, DetRules: map[string]map[int]int{}, SoleRules: map[string]map[int]int{},
		Misses: map[string]map[string]int{}}
	for _, p := range profiles {
		r.FPRules[p] = map[int]int{}
		r.DetRules[p] = map[int]int{}
		r.SoleRules[p] = map[int]int{}
		r.Misses[p] = map[string]int{}
	}
	return r
}

func add(m map[string]map[string]map[string]Rate, dim, value, profile string, hit bool) {
	if m[dim] == nil {
		m[dim] = map[string]map[string]Rate{}
	}
	if m[dim][value] == nil {
		m[dim][value] = map[string]Rate{}
	}
	r := m[dim][value][profile]
	r.N++
	if hit {
		r.Hits++
	}
	m[dim][value][profile] = r
}

// tally counts outcomes into a Report.
func tally(r *Report, items []Item, checks []check, outs [][]outcome) {
	for _, it := range items {
		r.Items[it.Kind]++
	}
	for i, c := range checks {
		for j, p := range r.Profiles {
			o := outs[i][j]
			if c.item.Kind == Attack {
				add(r.Detection, "overall", "all", p, o.denied)
				add(r.Detection, "encoding", c.item.Encoding, p, o.denied)
				if o.denied {
					for _, id := range o.rules {
						r.DetRules[p][id]++
					}
					if len(o.rules) == 1 {
						r.SoleRules[p][o.rules[0]]++
					}
				}
				if c.item.Encoding == "raw" {
					add(r.Detection, "class", c.item.Class, p, o.denied)
					add(r.Detection, "placement", c.place, p, o.denied)
					if !o.denied {
						r.Misses[p][c.item.Class+"/"+c.place]++
					}
				}
				continue
			}
			add(r.FalsePositive, "overall", "all", p, o.denied)
			add(r.FalsePositive, "class", c.item.Class, p, o.denied)
			add(r.FalsePositive, "placement", c.place, p, o.denied)
			if o.denied {
				for _, id := range o.rules {
					r.FPRules[p][id]++
				}
			}
		}
	}
}

// topRules returns the n rule ids with the highest counts (ties by id).
func topRules(m map[int]int, n int) []int {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b int) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return a - b
	})
	if len(ids) > n {
		ids = ids[:n]
	}
	return ids
}
