package istiotest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"istio.io/istio/pkg/config/mesh"
)

// The random-graph property of `policy verify` against Istio itself. For
// each seed a random ServiceGraph (namespaces, shared service accounts,
// several ports and protocols, method and path narrowing, ingress, a
// scraper, inspected services, a trust domain and peers of other trust
// domains) and a few hand-written AuthorizationPolicies (ALLOW and DENY, by
// principal, namespace, service account, trust domain, ports and methods)
// are judged three ways, and the three must agree on every source,
// destination port and request:
//
//   - the intent: the graph's flows (edges, ingress, scraper, ext_authz
//     callers) plus what each hand-written policy says, computed here from
//     the graph, not from meshwaf's plan;
//   - Istio: the RBAC filters Istio's xDS generation puts on each inbound
//     mTLS chain of each destination's sidecar, for the policies `meshwaf
//     policy generate` rendered plus the hand-written ones, evaluated with
//     Envoy's RBAC semantics (rbacAllows);
//   - meshwaf: `meshwaf policy verify` over the same files, read from its
//     reachability matrix.
//
// A planning or rendering bug shows as Istio disagreeing with the intent; an
// evaluator bug as verify disagreeing with Istio.
func TestVerifyRandomGraphsAgainstIstio(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			g := randomShop(rand.New(rand.NewPCG(seed, 0x6d657368)))
			problems := checkRandomGraph(t, g)
			if len(problems) == 0 {
				return
			}
			const show = 30
			for i, p := range problems {
				if i == show {
					t.Errorf("... and %d more", len(problems)-show)
					break
				}
				t.Error(p)
			}
			t.Errorf("seed %d: %d disagreements; graph:\n%s\nhand-written policies:\n%s", seed, len(problems), g.graphYAML(), g.extraYAML())
		})
	}
}

// rgPort is one port of a random service.
type rgPort struct {
	port     int
	protocol string // HTTP, HTTP2, GRPC, TCP or TLS
	metrics  bool
}

func (p rgPort) http() bool {
	return p.protocol == "HTTP" || p.protocol == "HTTP2" || p.protocol == "GRPC"
}

// rgPeer is a source identity: a graph service, the ingress gateway or the
// scraper.
type rgPeer struct {
	id        string // as `policy verify` names it: ns/name, ingress-gateway, scraper
	principal string // td/ns/x/sa/y
}

func (p rgPeer) td() string { return strings.SplitN(p.principal, "/", 2)[0] }
func (p rgPeer) nsSA() (string, string) {
	parts := strings.Split(p.principal, "/")
	return parts[2], parts[4]
}

// rgDest is a destination workload: a graph service or meshwaf.
type rgDest struct {
	name, namespace, sa string
	labels              map[string]string
	ports               []rgPort
	ingress, inspect    bool
	meshwaf             bool
}

func (d *rgDest) id() string { return d.namespace + "/" + d.name }

func (d *rgDest) port(p int) (rgPort, bool) {
	for _, dp := range d.ports {
		if dp.port == p {
			return dp, true
		}
	}
	return rgPort{}, false
}

type rgEdge struct {
	from, to *rgDest
	ports    []int // nil: omitted in the graph (every non-metrics port)
	methods  []string
	paths    []string
}

// rgPolicy is one hand-written AuthorizationPolicy and what it means: the
// destinations it applies to and the requests its rules match there.
type rgPolicy struct {
	yaml    string
	deny    bool
	applies func(d *rgDest) bool
	matches func(src rgPeer, d *rgDest, p rgPort, req rgRequest) bool
}

// rgRequest is one probe: an HTTP request (method, path) or, on TCP and
// TLS ports, a connection (both empty).
type rgRequest struct{ method, path string }

type randomGraph struct {
	trustDomain string
	services    []*rgDest
	edges       []*rgEdge
	ingress     rgPeer
	ingressYAML string // the settings.ingressGateway value, "" for the default
	scraper     *rgPeer
	scraperYAML string
	meshwaf     *rgDest // nil when no service is inspected
	extra       []rgPolicy
}

// Narrowing values. PATCH and /zz/other are in none of them, so every
// narrowed flow has a probe it must deny.
var (
	rgMethods = []string{"GET", "POST", "PUT", "DELETE"}
	rgPaths   = []string{"/api/*", "/healthz", "*.json", "/admin/*"}
)

const foreignTD = "partner.example"

// randomShop builds a valid random graph and hand-written policies.
func randomShop(r *rand.Rand) *randomGraph {
	g := &randomGraph{trustDomain: []string{"cluster.local", "example.org", "mesh.internal"}[r.IntN(3)]}
	pick := func(n int) int { return r.IntN(n) }
	n := 2 + pick(5)
	for i := range n {
		s := &rgDest{name: fmt.Sprintf("s%d", i), namespace: fmt.Sprintf("ns%d", pick(3))}
		s.sa = s.name
		if pick(4) == 0 {
			s.sa = fmt.Sprintf("shared%d", pick(2))
		}
		s.labels = map[string]string{"app": s.name}
		if pick(3) == 0 {
			s.labels["tier"] = fmt.Sprintf("t%d", pick(2))
		}
		for _, port := range []int{8080, 8443, 9100}[:1+pick(3)] {
			p := rgPort{port: port, protocol: []string{"HTTP", "HTTP2", "GRPC", "TCP", "TLS"}[pick(5)]}
			p.metrics = port == 9100 && pick(2) == 0
			s.ports = append(s.ports, p)
		}
		s.ingress = pick(3) == 0
		s.inspect = pick(3) == 0
		g.services = append(g.services, s)
	}
	// Peers outside the graph, sometimes of another trust domain.
	g.ingress = rgPeer{id: "ingress-gateway", principal: g.trustDomain + "/ns/istio-system/sa/istio-ingressgateway-service-account"}
	if pick(3) == 0 {
		g.ingress.principal = foreignTD + "/ns/istio-system/sa/gateway"
		g.ingressYAML = "{principal: " + g.ingress.principal + "}"
	}
	switch pick(3) {
	case 0:
		g.scraper = &rgPeer{id: "scraper", principal: g.trustDomain + "/ns/monitoring/sa/prometheus"}
		g.scraperYAML = "{namespace: monitoring, serviceAccount: prometheus}"
	case 1:
		g.scraper = &rgPeer{id: "scraper", principal: foreignTD + "/ns/monitoring/sa/prometheus"}
		g.scraperYAML = "{principal: " + g.scraper.principal + "}"
	}
	seen := map[string]bool{}
	for range pick(3 * n) {
		e := &rgEdge{from: g.services[pick(n)], to: g.services[pick(n)]}
		if pick(4) != 0 {
			p := e.to.ports[pick(len(e.to.ports))]
			e.ports = []int{p.port}
			if p.http() && pick(2) == 0 {
				if pick(2) == 0 {
					e.methods = sortedSample(r, rgMethods, 1+pick(2))
				}
				if len(e.methods) == 0 || pick(2) == 0 {
					e.paths = sortedSample(r, rgPaths, 1+pick(2))
				}
			}
		}
		dup := false
		for _, p := range e.coveredPorts() {
			k := fmt.Sprintf("%s %s %d", e.from.id(), e.to.id(), p)
			dup = dup || seen[k]
			seen[k] = true
		}
		if !dup && len(e.coveredPorts()) > 0 {
			g.edges = append(g.edges, e)
		}
	}
	for _, s := range g.services {
		if s.inspect {
			g.meshwaf = &rgDest{
				name: "meshwaf", namespace: "meshwaf-system", sa: "meshwaf",
				labels: map[string]string{"app": "meshwaf"}, meshwaf: true,
				ports: []rgPort{{port: 9000, protocol: "GRPC"}, {port: 9090, protocol: "HTTP", metrics: true}},
			}
			break
		}
	}
	for range pick(4) {
		g.extra = append(g.extra, g.randomPolicy(r, len(g.extra)))
	}
	return g
}

func sortedSample(r *rand.Rand, from []string, k int) []string {
	idx := r.Perm(len(from))[:k]
	out := make([]string, k)
	for i, j := range idx {
		out[i] = from[j]
	}
	sort.Strings(out)
	return out
}

// coveredPorts are the ports the edge allows (omitted: every non-metrics
// port of the target, as the graph format says).
func (e *rgEdge) coveredPorts() []int {
	if e.ports != nil {
		return e.ports
	}
	var out []int
	for _, p := range e.to.ports {
		if !p.metrics {
			out = append(out, p.port)
		}
	}
	return out
}

func (g *randomGraph) sources() []rgPeer {
	var out []rgPeer
	for _, s := range g.services {
		out = append(out, rgPeer{id: s.id(), principal: g.trustDomain + "/ns/" + s.namespace + "/sa/" + s.sa})
	}
	out = append(out, g.ingress)
	if g.scraper != nil {
		out = append(out, *g.scraper)
	}
	return out
}

func (g *randomGraph) dests() []*rgDest {
	out := append([]*rgDest(nil), g.services...)
	if g.meshwaf != nil {
		out = append(out, g.meshwaf)
	}
	return out
}

func (g *randomGraph) principalOf(s *rgDest) string {
	return g.trustDomain + "/ns/" + s.namespace + "/sa/" + s.sa
}

// pathMatches is Istio's path form: exact, "prefix*", "*suffix", "*".
func pathMatches(pattern, path string) bool {
	switch {
	case pattern == "*":
		return path != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(path, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(path, pattern[:len(pattern)-1])
	}
	return pattern == path
}

// planned is the graph's intent for one request: some edge, ingress,
// scraper or ext_authz grant names the source's principal (sources that
// share a principal share their flows).
func (g *randomGraph) planned(src rgPeer, d *rgDest, p rgPort, req rgRequest) (allowed, narrowed bool) {
	some := false
	grant := func(methods, paths []string) {
		if len(methods)+len(paths) == 0 {
			some = true
			return
		}
		if len(methods) > 0 && !slices.Contains(methods, req.method) {
			return
		}
		if len(paths) > 0 && !slices.ContainsFunc(paths, func(pat string) bool { return pathMatches(pat, req.path) }) {
			return
		}
		some = true
	}
	narrowedOnly := true
	for _, e := range g.edges {
		if e.to != d || g.principalOf(e.from) != src.principal || !slices.Contains(e.coveredPorts(), p.port) {
			continue
		}
		narrowedOnly = narrowedOnly && len(e.methods)+len(e.paths) > 0
		grant(e.methods, e.paths)
	}
	wide := func() { narrowedOnly = false; grant(nil, nil) }
	if !d.meshwaf && d.ingress && !p.metrics && src.principal == g.ingress.principal {
		wide()
	}
	if g.scraper != nil && p.metrics && src.principal == g.scraper.principal {
		wide()
	}
	if d.meshwaf && p.port == 9000 {
		for _, s := range g.services {
			if s.inspect && g.principalOf(s) == src.principal {
				wide()
			}
		}
	}
	return some, some && narrowedOnly
}

// intended is the verdict on one request with the hand-written policies:
// a matching DENY denies; otherwise a planned flow or a matching ALLOW
// admits (every destination has an ALLOW policy: its namespace's
// allow-nothing or meshwaf's ext_authz ALLOW).
func (g *randomGraph) intended(src rgPeer, d *rgDest, p rgPort, req rgRequest) bool {
	allowed, _ := g.planned(src, d, p, req)
	for _, x := range g.extra {
		if !x.applies(d) || !x.matches(src, d, p, req) {
			continue
		}
		if x.deny {
			return false
		}
		allowed = true
	}
	return allowed
}

// probes are the requests tried on a port: on HTTP ports every method and
// path the narrowings name and one of each that none names.
func probes(p rgPort) []rgRequest {
	if !p.http() {
		return []rgRequest{{}}
	}
	paths := []string{"/zz/other", "/api/v1", "/healthz", "/data/x.json", "/admin/users"}
	var out []rgRequest
	for _, m := range append([]string{"PATCH"}, rgMethods...) {
		for _, path := range paths {
			out = append(out, rgRequest{method: m, path: path})
		}
	}
	return out
}

// randomPolicy is one hand-written policy from a few shapes users write,
// with its meaning stated independently of meshwaf's evaluator.
func (g *randomGraph) randomPolicy(r *rand.Rand, i int) rgPolicy {
	srcs := g.sources()
	dests := g.dests()
	d := dests[r.IntN(len(dests))]
	dp := d.ports[r.IntN(len(d.ports))]
	s := srcs[r.IntN(len(srcs))]
	name := fmt.Sprintf("hand-written-%d", i)
	selects := func(x *rgDest) bool { return x == d }
	head := func(action, ns string, withSelector bool) string {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec:\n  action: %s\n", name, ns, action)
		if withSelector {
			var kv []string
			for _, k := range sortedKeys(d.labels) {
				kv = append(kv, k+": "+d.labels[k])
			}
			fmt.Fprintf(&b, "  selector: {matchLabels: {%s}}\n", strings.Join(kv, ", "))
		}
		return b.String()
	}
	onPort := func(p rgPort) bool { return p.port == dp.port }
	switch r.IntN(9) {
	case 0:
		// ALLOW one principal on one port, written with "cluster.local" for
		// the mesh's own trust domain half of the time: Istio reads
		// cluster.local in a principal as the local trust domain.
		pr := s.principal
		if s.td() == g.trustDomain && r.IntN(2) == 0 {
			pr = "cluster.local/" + strings.SplitN(pr, "/", 2)[1]
		}
		return rgPolicy{
			yaml:    head("ALLOW", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {principals: [%s]}}], to: [{operation: {ports: [\"%d\"]}}]}]\n", pr, dp.port),
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				return src.principal == s.principal && onPort(p)
			},
		}
	case 1:
		// ALLOW one principal GET only: on a TCP or TLS port Istio drops
		// the rule, on an HTTP port it admits GET requests.
		return rgPolicy{
			yaml:    head("ALLOW", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {principals: [%s]}}], to: [{operation: {ports: [\"%d\"], methods: [GET]}}]}]\n", s.principal, dp.port),
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, req rgRequest) bool {
				return src.principal == s.principal && onPort(p) && p.http() && req.method == "GET"
			},
		}
	case 2:
		// ALLOW a whole namespace on every port but one.
		ns, _ := s.nsSA()
		return rgPolicy{
			yaml:    head("ALLOW", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {namespaces: [%s]}}], to: [{operation: {notPorts: [\"%d\"]}}]}]\n", ns, dp.port),
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				sns, _ := src.nsSA()
				return sns == ns && !onPort(p)
			},
		}
	case 3:
		// ALLOW a trust domain on one port.
		td := []string{g.trustDomain, foreignTD}[r.IntN(2)]
		return rgPolicy{
			yaml:    head("ALLOW", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {trustDomains: [%s]}}], to: [{operation: {ports: [\"%d\"]}}]}]\n", td, dp.port),
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				return src.td() == td && onPort(p)
			},
		}
	case 4:
		// DENY every other trust domain, mesh-wide from the root namespace.
		return rgPolicy{
			yaml:    head("DENY", "istio-system", false) + fmt.Sprintf("  rules: [{from: [{source: {notTrustDomains: [%s]}}]}]\n", g.trustDomain),
			deny:    true,
			applies: func(*rgDest) bool { return true },
			matches: func(src rgPeer, _ *rgDest, _ rgPort, _ rgRequest) bool {
				return src.td() != g.trustDomain
			},
		}
	case 5:
		// DENY a namespace/service account of any trust domain.
		ns, sa := s.nsSA()
		return rgPolicy{
			yaml:    head("DENY", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {principals: [\"*/ns/%s/sa/%s\"]}}]}]\n", ns, sa),
			deny:    true,
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, _ rgPort, _ rgRequest) bool {
				sns, ssa := src.nsSA()
				return sns == ns && ssa == sa
			},
		}
	case 6:
		// DENY a source namespace on one port, for the whole namespace.
		ns, _ := s.nsSA()
		return rgPolicy{
			yaml:    head("DENY", d.namespace, false) + fmt.Sprintf("  rules: [{from: [{source: {namespaces: [%s]}}], to: [{operation: {ports: [\"%d\"]}}]}]\n", ns, dp.port),
			deny:    true,
			applies: func(x *rgDest) bool { return x.namespace == d.namespace },
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				sns, _ := src.nsSA()
				return sns == ns && onPort(p)
			},
		}
	case 7:
		// ALLOW a service account named without its namespace: Istio reads
		// it in the policy's namespace.
		_, sa := s.nsSA()
		return rgPolicy{
			yaml:    head("ALLOW", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {serviceAccounts: [%s]}}], to: [{operation: {ports: [\"%d\"]}}]}]\n", sa, dp.port),
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				sns, ssa := src.nsSA()
				return sns == d.namespace && ssa == sa && onPort(p)
			},
		}
	default:
		// DENY everyone but one service account (of any trust domain) on
		// one port.
		ns, sa := s.nsSA()
		return rgPolicy{
			yaml:    head("DENY", d.namespace, true) + fmt.Sprintf("  rules: [{from: [{source: {notServiceAccounts: [%s/%s]}}], to: [{operation: {ports: [\"%d\"]}}]}]\n", ns, sa, dp.port),
			deny:    true,
			applies: selects,
			matches: func(src rgPeer, _ *rgDest, p rgPort, _ rgRequest) bool {
				sns, ssa := src.nsSA()
				return !(sns == ns && ssa == sa) && onPort(p)
			},
		}
	}
}

func (g *randomGraph) graphYAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: meshwaf.io/v1alpha1\nkind: ServiceGraph\nmetadata: {name: random}\nspec:\n  trustDomain: %s\n", g.trustDomain)
	if g.ingressYAML != "" || g.scraperYAML != "" {
		b.WriteString("  settings:\n")
		if g.ingressYAML != "" {
			b.WriteString("    ingressGateway: " + g.ingressYAML + "\n")
		}
		if g.scraperYAML != "" {
			b.WriteString("    scraper: " + g.scraperYAML + "\n")
		}
	}
	b.WriteString("  services:\n")
	for _, s := range g.services {
		fmt.Fprintf(&b, "  - name: %s\n    namespace: %s\n    serviceAccount: %s\n", s.name, s.namespace, s.sa)
		var kv []string
		for _, k := range sortedKeys(s.labels) {
			kv = append(kv, k+": "+s.labels[k])
		}
		fmt.Fprintf(&b, "    selector: {%s}\n    ports:\n", strings.Join(kv, ", "))
		for _, p := range s.ports {
			fmt.Fprintf(&b, "    - {port: %d, protocol: %s, metrics: %v}\n", p.port, p.protocol, p.metrics)
		}
		fmt.Fprintf(&b, "    ingress: %v\n    inspect: %v\n", s.ingress, s.inspect)
	}
	if len(g.edges) > 0 {
		b.WriteString("  edges:\n")
	}
	for _, e := range g.edges {
		fmt.Fprintf(&b, "  - {from: %s, to: %s", e.from.id(), e.to.id())
		if e.ports != nil {
			fmt.Fprintf(&b, ", ports: %s", strings.Join(strings.Fields(fmt.Sprint(e.ports)), ", "))
		}
		if len(e.methods) > 0 {
			fmt.Fprintf(&b, ", methods: [%s]", strings.Join(e.methods, ", "))
		}
		if len(e.paths) > 0 {
			fmt.Fprintf(&b, ", paths: [\"%s\"]", strings.Join(e.paths, `", "`))
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func (g *randomGraph) extraYAML() string {
	var docs []string
	for _, x := range g.extra {
		docs = append(docs, x.yaml)
	}
	return strings.Join(docs, "---\n")
}

// workloads are the destinations as pods for Istio's discovery server.
func (g *randomGraph) workloads() []workload {
	var ws []workload
	for i, d := range g.dests() {
		labels := map[string]string{}
		for k, v := range d.labels {
			labels[k] = v
		}
		if d.inspect {
			labels[optInLabel] = optInValue
		}
		w := workload{
			name: d.name, namespace: d.namespace, serviceAccount: d.sa, labels: labels,
			ip: fmt.Sprintf("10.10.1.%d", i+10), inspect: d.inspect, protocols: map[int32]string{},
		}
		for _, p := range d.ports {
			w.ports = append(w.ports, int32(p.port))
			w.protocols[int32(p.port)] = p.protocol
		}
		ws = append(ws, w)
	}
	return ws
}

// checkRandomGraph runs one random graph through meshwaf and Istio and
// returns every disagreement.
func checkRandomGraph(t *testing.T, g *randomGraph) []string {
	t.Helper()
	dir := t.TempDir()
	graphFile := filepath.Join(dir, "graph.yaml")
	generated := filepath.Join(dir, "generated.yaml")
	extraFile := filepath.Join(dir, "hand-written.yaml")
	writeFile(t, graphFile, g.graphYAML())
	writeFile(t, generated, meshwaf(t, "policy", "generate", "-f", graphFile))
	files := []string{generated}
	if len(g.extra) > 0 {
		writeFile(t, extraFile, g.extraYAML())
		files = append(files, extraFile)
	}

	// meshwaf's verdict, from the reachability matrix of policy verify.
	args := []string{"policy", "verify", "--graph", graphFile, "--matrix", "always"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	verdict, err := parseMatrix(meshwafVerify(t, args...))
	if err != nil {
		t.Fatalf("policy verify: %v", err)
	}

	// Istio's RBAC, for the same files.
	var all strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(string(data) + "\n---\n")
	}
	cfgs, _ := istioConfigs(t, "generated + hand-written", all.String())
	mc := mesh.DefaultMeshConfig()
	mc.TrustDomain = g.trustDomain
	ws := g.workloads()
	s := newServer(t, cfgs, kubeObjects(ws), mc)

	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	srcs := g.sources()
	for i, d := range g.dests() {
		chains := inboundChains(t, s.Listeners(proxy(s, ws[i])))
		for _, p := range d.ports {
			var rbacs []rbacFilters
			for _, fc := range chains {
				if isBlackhole(fc) || int(fc.GetFilterChainMatch().GetDestinationPort().GetValue()) != p.port ||
					fc.GetFilterChainMatch().GetTransportProtocol() != "tls" {
					continue
				}
				r := chainRBAC(t, fc)
				if len(r.rules) == 0 {
					add("%s:%d: %s has no enforced RBAC filter", d.id(), p.port, chainName(fc))
				}
				rbacs = append(rbacs, r)
			}
			if len(rbacs) == 0 {
				add("%s:%d: no inbound mTLS chain", d.id(), p.port)
				continue
			}
			row := fmt.Sprintf("%s:%d", d.id(), p.port)
			for _, src := range srcs {
				istioSome, istioAll, intentSome := false, true, false
				for _, req := range probes(p) {
					want := g.intended(src, d, p, req)
					intentSome = intentSome || want
					for _, r := range rbacs {
						got, err := rbacAllows(r.rules, rbacRequest{principal: "spiffe://" + src.principal, port: p.port, method: req.method, path: req.path})
						if err != nil {
							t.Fatalf("%s: %v", row, err)
						}
						istioSome = istioSome || got
						istioAll = istioAll && got
						if got != want {
							add("%s -> %s %s: Istio allows=%v, the graph and hand-written policies mean %v", src.id, row, req, got, want)
						}
					}
				}
				cell, ok := verdict.cell(row, src.id)
				if !ok {
					add("%s -> %s: not in the reachability matrix of policy verify", src.id, row)
					continue
				}
				verifyAllowed := cell == 'A' || cell == '+' || cell == '*'
				if cell == '~' {
					add("%s -> %s: policy verify says conditional; every policy here is one it can evaluate", src.id, row)
					continue
				}
				if verifyAllowed != istioSome {
					add("%s -> %s: policy verify allows=%v (cell %c), Istio allows=%v", src.id, row, verifyAllowed, cell, istioSome)
				}
				if verifyAllowed != intentSome {
					add("%s -> %s: policy verify allows=%v (cell %c), intended %v", src.id, row, verifyAllowed, cell, intentSome)
				}
				// Where the matrix tells (planned and allowed), verify's
				// "only some requests" must match Istio's.
				if cell == 'A' || cell == '*' {
					_, plannedNarrow := g.plannedAny(src, d, p)
					verifyPartial := plannedNarrow != (cell == '*')
					istioPartial := istioSome && !istioAll
					if verifyPartial != istioPartial {
						add("%s -> %s: policy verify partial=%v (cell %c), Istio partial=%v", src.id, row, verifyPartial, cell, istioPartial)
					}
				}
			}
		}
	}
	t.Logf("%d sources, %d destinations, %d edges, %d hand-written policies, trust domain %s: %d disagreements",
		len(srcs), len(g.dests()), len(g.edges), len(g.extra), g.trustDomain, len(problems))
	return problems
}

// plannedAny is whether the graph plans the flow for some request, and
// for only some (every grant for the source's principal narrowed).
func (g *randomGraph) plannedAny(src rgPeer, d *rgDest, p rgPort) (bool, bool) {
	some, narrowed := false, false
	for _, req := range probes(p) {
		a, n := g.planned(src, d, p, req)
		if a {
			some, narrowed = true, n
		}
	}
	return some, narrowed
}

func (r rgRequest) String() string {
	if r.method == "" {
		return "(connection)"
	}
	return r.method + " " + r.path
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// meshwafVerify runs `meshwaf policy verify`, which exits 1 when the
// policies differ from the graph (the hand-written ones make them differ),
// and returns its stdout.
func meshwafVerify(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.meshwaf, args...)
	cmd.Dir = env.repo
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 1) {
		t.Fatalf("meshwaf %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// matrix is the reachability matrix of `policy verify`: a cell per
// destination:port row and source column.
type matrix struct {
	sources []string
	rows    map[string][]byte
}

func (m *matrix) cell(row, source string) (byte, bool) {
	cells, ok := m.rows[row]
	if !ok {
		return 0, false
	}
	for i, s := range m.sources {
		if s == source {
			return cells[i], true
		}
	}
	return 0, false
}

// parseMatrix reads the legend ("  [i] source") and the rows
// ("dest:port  c c c") of the matrix in verify's output.
func parseMatrix(out string) (*matrix, error) {
	m := &matrix{rows: map[string][]byte{}}
	lines := strings.Split(out, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "reachability: ") })
	if start < 0 {
		return nil, fmt.Errorf("no reachability matrix in:\n%s", out)
	}
	for _, l := range lines[start+1:] {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && strings.HasPrefix(f[0], "[") && strings.HasSuffix(f[0], "]"):
			m.sources = append(m.sources, f[1])
		case len(f) == len(m.sources)+1 && len(m.sources) > 0 && strings.Contains(f[0], ":") && !strings.HasSuffix(f[0], ":"):
			cells := make([]byte, 0, len(m.sources))
			for _, c := range f[1:] {
				if len(c) != 1 || !strings.Contains("A.+-~*", c) {
					return nil, fmt.Errorf("matrix row %q: cell %q", l, c)
				}
				cells = append(cells, c[0])
			}
			m.rows[f[0]] = cells
		case len(m.rows) > 0:
			return m, nil // the matrix ends; the diff follows
		}
	}
	if len(m.sources) == 0 || len(m.rows) == 0 {
		return nil, fmt.Errorf("empty reachability matrix in:\n%s", out)
	}
	return m, nil
}
