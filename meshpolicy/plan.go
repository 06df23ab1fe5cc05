package meshpolicy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// PeerKind tells graph services from the identities meshwaf adds.
type PeerKind string

// Peer kinds.
const (
	KindService        PeerKind = "service"
	KindIngressGateway PeerKind = "ingress-gateway"
	KindScraper        PeerKind = "scraper"
	KindMeshwaf        PeerKind = "meshwaf"
)

// Peer IDs of the identities that are not graph services.
const (
	IngressGatewayID = "ingress-gateway"
	ScraperID        = "scraper"
)

// Peer is one source or destination workload of a plan.
type Peer struct {
	// ID is "namespace/name" for services and meshwaf, IngressGatewayID or
	// ScraperID otherwise.
	ID        string
	Kind      PeerKind
	Namespace string
	// Name is the service name (meshwaf's is "meshwaf").
	Name           string
	ServiceAccount string
	// Principal is the peer's Istio principal (no spiffe:// prefix).
	Principal string
	// Labels are the workload's pod labels (its graph selector).
	Labels map[string]string
}

// Plan is the segmentation a graph asks for: which namespaces are
// default-deny, and for each destination workload and port, which source
// principals may call it.
type Plan struct {
	Graph *Graph
	// Namespaces the graph covers, sorted: each gets a default-deny.
	Namespaces []string
	// Sources are the graph's services sorted by ID, then the ingress
	// gateway, then the scraper when configured.
	Sources []Peer
	// Destinations are the graph's services sorted by ID, then meshwaf when
	// some service is inspected.
	Destinations []Destination
	// Notes explain what the plan added beyond the graph's edges and warn
	// about what policies cannot express.
	Notes []string

	offsets []int // first flat destination-port index of each destination
	total   int
	byPrinc map[string][]int // principal -> source indexes
}

// Destination is one workload that receives traffic.
type Destination struct {
	Peer
	// PolicyName is the stable name of its generated ALLOW policy.
	PolicyName string
	// Reason says why meshwaf added the destination; empty for services.
	Reason string
	Ports  []DestPort
	// Waypoint is the ID of the waypoint peer in front of the destination
	// in an ambient plan (NewAmbientPlan); empty otherwise.
	Waypoint string
}

// HasGrants reports whether any port of the destination admits a source.
func (d Destination) HasGrants() bool {
	for _, p := range d.Ports {
		if len(p.Grants) > 0 {
			return true
		}
	}
	return false
}

// DestPort is one port of a destination and who may reach it.
type DestPort struct {
	Port     int
	Protocol string
	Metrics  bool
	// Grants sorted by principal, methods, paths.
	Grants []Grant
}

// Grant admits one principal, for every request or only for the HTTP
// methods and paths given.
type Grant struct {
	Principal string
	// Sources are the IDs of the peers that gave rise to the grant.
	Sources []string
	Methods []string
	Paths   []string
	// Why is "edge", "ingress", "ext_authz", "metrics" or "waypoint".
	Why string
	// Via is the ID of the waypoint that enforces the grant in an ambient
	// plan; empty when the destination's ztunnel (or sidecar) does.
	Via string
}

// Narrowed reports whether the grant admits only some HTTP requests.
func (g Grant) Narrowed() bool { return len(g.Methods) > 0 || len(g.Paths) > 0 }

// Grant reasons.
const (
	WhyEdge     = "edge"
	WhyIngress  = "ingress"
	WhyExtAuthz = "ext_authz"
	WhyMetrics  = "metrics"
)

// NewPlan derives the plan of a validated graph.
func NewPlan(g *Graph) *Plan {
	pl := &planner{p: &Plan{Graph: g}, td: g.TrustDomain, grants: map[destPort]map[string][]*Grant{}}
	pl.addServices()
	pl.addIdentities()
	pl.grantEdges()
	pl.grantIngressAndMetrics()
	pl.addMeshwaf()
	pl.noteScrapedPorts()
	pl.attachGrants()
	p := pl.p
	p.Notes = append(p.Notes, sharedPrincipalNotes(p.Sources)...)
	p.Notes = append(p.Notes, overlappingSelectorNotes(pl.svcs)...)
	p.index()
	return p
}

// planner is the state NewPlan's steps share.
type planner struct {
	p  *Plan
	td string // trust domain
	// svcs are the graph's services sorted by Ref; byRef points into it.
	svcs  []Service
	byRef map[string]*Service
	// ingress and scraper are the identities meshwaf adds as sources;
	// scraper is nil without spec.settings.scraper.
	ingress Peer
	scraper *Peer
	// grants: per destination port and principal, one grant per distinct
	// (methods, paths), found by comparing the lists.
	grants map[destPort]map[string][]*Grant
}

// destPort is one port of one destination, by destination ID.
type destPort struct {
	dest string
	port int
}

// addServices makes every service a source and a destination, and
// collects the namespaces the graph covers.
func (pl *planner) addServices() {
	p := pl.p
	pl.svcs = append([]Service(nil), p.Graph.Services...)
	sort.Slice(pl.svcs, func(i, j int) bool { return pl.svcs[i].Ref() < pl.svcs[j].Ref() })
	nsSet := map[string]bool{}
	pl.byRef = map[string]*Service{}
	for i := range pl.svcs {
		s := pl.svcs[i]
		pl.byRef[s.Ref()] = &pl.svcs[i]
		nsSet[s.Namespace] = true
		peer := Peer{ID: s.Ref(), Kind: KindService, Namespace: s.Namespace, Name: s.Name,
			ServiceAccount: s.ServiceAccount, Principal: Principal(pl.td, s.Namespace, s.ServiceAccount), Labels: s.Selector}
		p.Sources = append(p.Sources, peer)
		d := Destination{Peer: peer, PolicyName: "meshwaf-allow-" + s.Name}
		for _, sp := range s.Ports {
			d.Ports = append(d.Ports, DestPort{Port: sp.Port, Protocol: sp.Protocol, Metrics: sp.Metrics})
		}
		sort.Slice(d.Ports, func(i, j int) bool { return d.Ports[i].Port < d.Ports[j].Port })
		p.Destinations = append(p.Destinations, d)
	}
	for ns := range nsSet {
		p.Namespaces = append(p.Namespaces, ns)
	}
	sort.Strings(p.Namespaces)
}

// addIdentities adds the ingress gateway and, when configured, the
// scraper as sources.
func (pl *planner) addIdentities() {
	set := pl.p.Graph.Settings
	pl.ingress = Peer{ID: IngressGatewayID, Kind: KindIngressGateway, Namespace: set.IngressGateway.Namespace,
		ServiceAccount: set.IngressGateway.ServiceAccount, Principal: set.IngressGateway.PrincipalIn(pl.td), Labels: set.IngressGateway.Selector}
	pl.p.Sources = append(pl.p.Sources, pl.ingress)
	if set.Scraper != nil {
		pl.scraper = &Peer{ID: ScraperID, Kind: KindScraper, Namespace: set.Scraper.Namespace,
			ServiceAccount: set.Scraper.ServiceAccount, Principal: set.Scraper.PrincipalIn(pl.td), Labels: set.Scraper.Selector}
		pl.p.Sources = append(pl.p.Sources, *pl.scraper)
	}
}

// grant admits principal on port of dest for methods and paths, on behalf
// of source. Grants with equal principal, methods and paths are one grant
// listing every source; the first one's reason stays.
func (pl *planner) grant(dest string, port int, principal, source string, methods, paths []string, why string) {
	k := destPort{dest, port}
	if pl.grants[k] == nil {
		pl.grants[k] = map[string][]*Grant{}
	}
	same := pl.grants[k][principal]
	i := slices.IndexFunc(same, func(gr *Grant) bool {
		return slices.Equal(gr.Methods, methods) && slices.Equal(gr.Paths, paths)
	})
	if i < 0 {
		same = append(same, &Grant{Principal: principal, Methods: methods, Paths: paths, Why: why})
		pl.grants[k][principal] = same
		i = len(same) - 1
	}
	if gr := same[i]; !slices.Contains(gr.Sources, source) {
		gr.Sources = append(gr.Sources, source)
	}
}

// grantEdges grants each edge's caller on the edge's ports.
func (pl *planner) grantEdges() {
	for _, e := range pl.p.Graph.Edges {
		from := pl.byRef[e.From]
		for _, port := range e.Ports {
			pl.grant(e.To, port, Principal(pl.td, from.Namespace, from.ServiceAccount), e.From, e.Methods, e.Paths, WhyEdge)
		}
	}
}

// grantIngressAndMetrics grants the ingress gateway the non-metrics ports
// of ingress services, and the scraper every metrics port.
func (pl *planner) grantIngressAndMetrics() {
	for _, s := range pl.svcs {
		for _, sp := range s.Ports {
			if s.Ingress && !sp.Metrics {
				pl.grant(s.Ref(), sp.Port, pl.ingress.Principal, pl.ingress.ID, nil, nil, WhyIngress)
			}
			if sp.Metrics && pl.scraper != nil {
				pl.grant(s.Ref(), sp.Port, pl.scraper.Principal, pl.scraper.ID, nil, nil, WhyMetrics)
			}
		}
	}
}

// addMeshwaf adds meshwaf as a destination when some service is inspected:
// the inspected services' sidecars may call its gRPC port and the scraper
// its metrics port.
func (pl *planner) addMeshwaf() {
	var inspected []string
	for _, s := range pl.svcs {
		if s.Inspect {
			inspected = append(inspected, s.Ref())
		}
	}
	if len(inspected) == 0 {
		return
	}
	p, m, scraper := pl.p, pl.p.Graph.Settings.Meshwaf, pl.scraper
	d := Destination{
		Peer: Peer{ID: m.Namespace + "/meshwaf", Kind: KindMeshwaf, Namespace: m.Namespace, Name: "meshwaf",
			ServiceAccount: m.ServiceAccount, Principal: Principal(pl.td, m.Namespace, m.ServiceAccount), Labels: m.Selector},
		PolicyName: "meshwaf-ext-authz-callers",
		Reason: fmt.Sprintf("the sidecars of the inspected workloads (%s) call meshwaf's ext_authz gRPC port %d for every request; without this ALLOW those calls fail and every inspected request is denied",
			strings.Join(inspected, ", "), m.GRPCPort),
		Ports: []DestPort{{Port: m.GRPCPort, Protocol: "GRPC"}, {Port: m.MetricsPort, Protocol: "HTTP", Metrics: true}},
	}
	if m.MetricsPort < m.GRPCPort {
		d.Ports[0], d.Ports[1] = d.Ports[1], d.Ports[0]
	}
	if scraper != nil {
		d.Reason += fmt.Sprintf("; the scraper %s may reach its metrics port %d", scraper.Principal, m.MetricsPort)
	} else {
		p.Notes = append(p.Notes, fmt.Sprintf("no spec.settings.scraper: meshwaf's metrics port %d is denied to everyone by its ALLOW policy", m.MetricsPort))
	}
	p.Destinations = append(p.Destinations, d)
	for _, ref := range inspected {
		s := pl.byRef[ref]
		pl.grant(d.ID, m.GRPCPort, Principal(pl.td, s.Namespace, s.ServiceAccount), ref, nil, nil, WhyExtAuthz)
	}
	if scraper != nil {
		pl.grant(d.ID, m.MetricsPort, scraper.Principal, scraper.ID, nil, nil, WhyMetrics)
	}
	p.Notes = append(p.Notes, fmt.Sprintf("added %s/%s: %s", m.Namespace, d.PolicyName, d.Reason))
}

// noteScrapedPorts says which service metrics ports the scraper may reach.
func (pl *planner) noteScrapedPorts() {
	if pl.scraper == nil {
		return
	}
	var targets []string
	for _, s := range pl.svcs {
		for _, sp := range s.Ports {
			if sp.Metrics {
				targets = append(targets, fmt.Sprintf("%s:%d", s.Ref(), sp.Port))
			}
		}
	}
	if len(targets) > 0 {
		pl.p.Notes = append(pl.p.Notes, fmt.Sprintf("added: the scraper %s may reach the metrics ports %s", pl.scraper.Principal, strings.Join(targets, ", ")))
	}
}

// attachGrants puts each destination port's grants on it, sorted, each
// with its sources sorted.
func (pl *planner) attachGrants() {
	for i := range pl.p.Destinations {
		d := &pl.p.Destinations[i]
		for j := range d.Ports {
			dp := &d.Ports[j]
			for _, same := range pl.grants[destPort{d.ID, dp.Port}] {
				for _, gr := range same {
					sort.Strings(gr.Sources)
					dp.Grants = append(dp.Grants, *gr)
				}
			}
			sort.Slice(dp.Grants, func(a, b int) bool { return grantLess(dp.Grants[a], dp.Grants[b]) })
		}
	}
}

// grantLess orders grants by principal, then methods, then paths, each
// list compared element by element.
func grantLess(a, b Grant) bool {
	if a.Principal != b.Principal {
		return a.Principal < b.Principal
	}
	if c := slices.Compare(a.Methods, b.Methods); c != 0 {
		return c < 0
	}
	return slices.Compare(a.Paths, b.Paths) < 0
}

func sharedPrincipalNotes(sources []Peer) []string {
	by := map[string][]string{}
	for _, s := range sources {
		by[s.Principal] = append(by[s.Principal], s.ID)
	}
	var notes []string
	for pr, ids := range by {
		if len(ids) > 1 {
			notes = append(notes, fmt.Sprintf("warning: %s share the principal %s; policies cannot tell them apart, so each may make the calls any of them may", strings.Join(ids, ", "), pr))
		}
	}
	sort.Strings(notes)
	return notes
}

func (p *Plan) index() {
	p.offsets = make([]int, len(p.Destinations))
	p.total = 0
	for i, d := range p.Destinations {
		p.offsets[i] = p.total
		p.total += len(d.Ports)
	}
	p.byPrinc = map[string][]int{}
	for i, s := range p.Sources {
		p.byPrinc[s.Principal] = append(p.byPrinc[s.Principal], i)
	}
}

// NumDestPorts is the number of (destination, port) pairs of the plan.
func (p *Plan) NumDestPorts() int { return p.total }

// DestPortIndex is the flat index of port j of destination i.
func (p *Plan) DestPortIndex(i, j int) int { return p.offsets[i] + j }

// SourcesWithPrincipal returns the indexes of the sources whose principal
// is exactly pr.
func (p *Plan) SourcesWithPrincipal(pr string) []int { return p.byPrinc[pr] }

// Reachability is, for every destination port of a plan (flat index), the
// sources allowed to reach it.
type Reachability struct {
	// Allowed sources (for at least some requests).
	Allowed []Bits
	// Partial: allowed only for some HTTP methods or paths.
	Partial []Bits
	// Conditional: the decision depends on what verify cannot evaluate
	// (request attributes, IP blocks, JWT claims).
	Conditional []Bits
	// Narrowings, per destination port, of the grants or rules that admit
	// only some requests: a partial flow admits the union of the requests
	// of those holding its source. Nil when not known; Compare then tells
	// partial flows only by being partial.
	Narrowings [][]Narrowing
}

// NewReachability returns an empty reachability sized for p.
func NewReachability(p *Plan) *Reachability {
	r := &Reachability{}
	n := len(p.Sources)
	for range p.total {
		r.Allowed = append(r.Allowed, NewBits(n))
		r.Partial = append(r.Partial, NewBits(n))
		r.Conditional = append(r.Conditional, NewBits(n))
	}
	return r
}

// Expected is the reachability the plan asks for. A source is allowed on a
// port when some grant names its principal (so sources sharing a principal
// share their flows), and partial when every such grant is narrowed, for
// the methods and paths of those grants (Narrowings).
func (p *Plan) Expected() *Reachability {
	r := NewReachability(p)
	r.Narrowings = make([][]Narrowing, p.total)
	for i, d := range p.Destinations {
		for j, dp := range d.Ports {
			k := p.DestPortIndex(i, j)
			full := NewBits(len(p.Sources))
			for _, gr := range dp.Grants {
				if gr.Narrowed() {
					r.Narrowings[k] = append(r.Narrowings[k], Narrowing{
						Sources:  SourceList(p.byPrinc[gr.Principal]),
						Requests: Requests{{Methods: gr.Methods, Paths: gr.Paths}},
					})
				}
				for _, s := range p.byPrinc[gr.Principal] {
					r.Allowed[k].Set(s)
					if !gr.Narrowed() {
						full.Set(s)
					}
				}
			}
			r.Partial[k].Or(r.Allowed[k])
			r.Partial[k].AndNot(full)
		}
	}
	return r
}

// Flow is one source reaching one destination port.
type Flow struct {
	From string
	To   string
	Port int
}

func (f Flow) String() string { return fmt.Sprintf("%s -> %s:%d", f.From, f.To, f.Port) }

// Diff is how the allowed flows differ from the plan's.
type Diff struct {
	// Missing flows are planned but denied.
	Missing []Flow
	// Extra flows are allowed but not planned.
	Extra []Flow
	// Broader flows are planned for some methods or paths but allowed for
	// every request.
	Broader []Flow
	// Narrower flows are planned for every request but allowed only for
	// some methods or paths.
	Narrower []Flow
	// Conditional flows are allowed or denied depending on what verify
	// cannot evaluate; Planned tells which of them the plan wants.
	Conditional []Flow
	Planned     []bool
	// Requests are flows planned and allowed for only some requests, but
	// not for the same methods and paths.
	Requests []RequestDiff
	// Unresolved flows are planned and allowed for only some requests, but
	// which requests the policies allow depends on what verify cannot
	// evaluate.
	Unresolved []Flow
}

// Mismatch reports whether the allowed flows differ from the plan; with
// strict, conditional and unresolved flows count too.
func (d Diff) Mismatch(strict bool) bool {
	return len(d.Missing)+len(d.Extra)+len(d.Broader)+len(d.Narrower)+len(d.Requests) > 0 ||
		(strict && len(d.Conditional)+len(d.Unresolved) > 0)
}

// Compare diffs got against the plan's expected reachability want (both
// sized for p). Conditional flows are neither missing nor extra.
func (p *Plan) Compare(want, got *Reachability) Diff {
	var d Diff
	n := len(p.Sources)
	tmp := NewBits(n)
	for i, dest := range p.Destinations {
		for j, dp := range dest.Ports {
			k := p.DestPortIndex(i, j)
			flow := func(s int) Flow { return Flow{From: p.Sources[s].ID, To: dest.ID, Port: dp.Port} }
			// missing: want & ~got.Allowed & ~got.Conditional
			copy(tmp, want.Allowed[k])
			tmp.AndNot(got.Allowed[k])
			tmp.AndNot(got.Conditional[k])
			tmp.Each(func(s int) { d.Missing = append(d.Missing, flow(s)) })
			copy(tmp, got.Allowed[k])
			tmp.AndNot(want.Allowed[k])
			tmp.AndNot(got.Conditional[k])
			tmp.Each(func(s int) { d.Extra = append(d.Extra, flow(s)) })
			got.Conditional[k].Each(func(s int) {
				d.Conditional = append(d.Conditional, flow(s))
				d.Planned = append(d.Planned, want.Allowed[k].Has(s))
			})
			// broader: want partial, got allowed fully
			copy(tmp, want.Partial[k])
			tmp.And(got.Allowed[k])
			tmp.AndNot(got.Partial[k])
			tmp.AndNot(got.Conditional[k])
			tmp.Each(func(s int) { d.Broader = append(d.Broader, flow(s)) })
			copy(tmp, got.Partial[k])
			tmp.And(want.Allowed[k])
			tmp.AndNot(want.Partial[k])
			tmp.AndNot(got.Conditional[k])
			tmp.Each(func(s int) { d.Narrower = append(d.Narrower, flow(s)) })
			if want.Narrowings == nil || got.Narrowings == nil {
				continue
			}
			// same partial: planned and allowed for the same requests?
			copy(tmp, want.Partial[k])
			tmp.And(got.Partial[k])
			tmp.AndNot(got.Conditional[k])
			tmp.Each(func(s int) {
				planned, _ := requestsOf(want.Narrowings[k], s)
				allowed, unknown := requestsOf(got.Narrowings[k], s)
				if unknown {
					d.Unresolved = append(d.Unresolved, flow(s))
					return
				}
				if same, ex := SameRequests(planned, allowed); !same {
					d.Requests = append(d.Requests, RequestDiff{Flow: flow(s), Planned: planned, Allowed: allowed, Example: ex})
				}
			})
		}
	}
	return d
}

// overlappingSelectorNotes warns when a service's selector also selects the
// pods of another service of its namespace: its policy applies to both.
func overlappingSelectorNotes(svcs []Service) []string {
	byPair := map[string][]int{} // "ns\x00key=value" -> services whose pods carry it
	for i, s := range svcs {
		for k, v := range s.Selector {
			key := s.Namespace + "\x00" + k + "=" + v
			byPair[key] = append(byPair[key], i)
		}
	}
	var notes []string
	for i, s := range svcs {
		var k0 string
		for k := range s.Selector {
			if k0 == "" || k < k0 {
				k0 = k
			}
		}
		for _, j := range byPair[s.Namespace+"\x00"+k0+"="+s.Selector[k0]] {
			if j != i && selects(s.Selector, svcs[j].Selector) {
				notes = append(notes, fmt.Sprintf("warning: the selector of %s also selects the pods of %s: the policy of %s applies to both", s.Ref(), svcs[j].Ref(), s.Ref()))
			}
		}
	}
	sort.Strings(notes)
	return notes
}

// selects reports whether selector matches every label of labels it names.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
