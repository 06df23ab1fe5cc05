package meshpolicy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// KindWaypoint is an ambient waypoint proxy: a source of an ambient plan,
// since the destination's ztunnel sees the waypoint's identity.
const KindWaypoint PeerKind = "waypoint"

// WhyWaypoint grants a waypoint the ports of the workloads behind it.
const WhyWaypoint = "waypoint"

// WaypointIDPrefix starts the ID of a waypoint peer: "waypoint:<ns>/<name>".
const WaypointIDPrefix = "waypoint:"

// WaypointID is the peer ID of the waypoint name in namespace.
func WaypointID(namespace, name string) string { return WaypointIDPrefix + namespace + "/" + name }

// NewAmbientPlan derives the plan of a validated graph for Istio's ambient
// data plane. It is NewPlan's plan, changed where ambient differs:
//
//   - Each waypoint named by a service (spec.services[].waypoint) is a
//     source, with the principal of its service account, which Istio names
//     after the waypoint's Gateway.
//   - A destination behind a waypoint has Waypoint set. Its edge grants are
//     enforced by the waypoint (Grant.Via), which sees the caller's identity;
//     its ztunnel sees the waypoint's identity, so the waypoint gets a grant
//     on every port an edge reaches through it. The ingress gateway (Istio
//     sends its traffic to the pod unless the Service is labelled
//     istio.io/ingress-use-waypoint) and the scraper (it scrapes pod IPs)
//     reach the workload directly and keep their grants at its ztunnel.
//   - meshwaf's gRPC port admits the waypoints in front of inspected
//     services, since in ambient mode the waypoint calls ext_authz.
//
// A graph whose edges narrow by methods or paths a service without a
// waypoint is refused: ztunnel enforces L4 only. The error is an ErrorList
// located by field path.
func NewAmbientPlan(g *Graph) (*Plan, error) {
	var errs ErrorList
	for i, e := range g.Edges {
		to, _ := g.Service(e.To)
		if e.Narrowed() && to != nil && to.Waypoint == "" {
			field := "methods"
			if len(e.Methods) == 0 {
				field = "paths"
			}
			errs = append(errs, fielderr.Errorf(fielderr.At("spec", "edges").Index(i).Field(field),
				"%s has no waypoint: ztunnel enforces L4 only, so methods and paths need one (set waypoint on the service or drop the narrowing)", e.To))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	p := NewPlan(g)
	waypoints := map[string]Peer{}
	svcWaypoint := map[string]string{} // service ref -> waypoint ID
	for _, s := range g.Services {
		if s.Waypoint == "" {
			continue
		}
		id := WaypointID(s.Namespace, s.Waypoint)
		svcWaypoint[s.Ref()] = id
		waypoints[id] = Peer{ID: id, Kind: KindWaypoint, Namespace: s.Namespace, Name: s.Waypoint,
			ServiceAccount: s.Waypoint, Principal: Principal(g.TrustDomain, s.Namespace, s.Waypoint),
			Labels: map[string]string{WaypointGatewayLabel: s.Waypoint}}
	}
	for _, id := range sortedMapKeys(waypoints) {
		p.Sources = append(p.Sources, waypoints[id])
	}
	for i := range p.Destinations {
		d := &p.Destinations[i]
		switch {
		case d.Kind == KindMeshwaf:
			ambientMeshwaf(p, d, g, svcWaypoint, waypoints)
		case svcWaypoint[d.ID] != "":
			behindWaypoint(d, waypoints[svcWaypoint[d.ID]])
		}
	}
	for _, s := range g.Services {
		if s.Inspect && s.Waypoint == "" {
			p.Notes = append(p.Notes, fmt.Sprintf("warning: %s is inspected but has no waypoint: in ambient mode only a waypoint calls meshwaf, so nothing inspects its requests", s.Ref()))
		}
	}
	p.index()
	return p, nil
}

// WaypointGatewayLabel is the label Istio puts on a waypoint's pods: the
// name of its Gateway.
const WaypointGatewayLabel = "gateway.networking.k8s.io/gateway-name"

// behindWaypoint moves the edge grants of d to the waypoint w and grants w
// the ports they use.
func behindWaypoint(d *Destination, w Peer) {
	d.Waypoint = w.ID
	for j := range d.Ports {
		dp := &d.Ports[j]
		via := false
		for k := range dp.Grants {
			if dp.Grants[k].Why == WhyEdge {
				dp.Grants[k].Via = w.ID
				via = true
			}
		}
		if via {
			dp.Grants = append(dp.Grants, Grant{Principal: w.Principal, Sources: []string{w.ID}, Why: WhyWaypoint})
			sort.SliceStable(dp.Grants, func(a, b int) bool { return grantLess(dp.Grants[a], dp.Grants[b]) })
		}
	}
}

// ambientMeshwaf replaces the inspected services' grants on meshwaf's gRPC
// port with grants to the waypoints in front of them, and rewrites the
// destination's reason and the note that repeats it.
func ambientMeshwaf(p *Plan, d *Destination, g *Graph, svcWaypoint map[string]string, waypoints map[string]Peer) {
	oldNote := fmt.Sprintf("added %s/%s: %s", d.Namespace, d.PolicyName, d.Reason)
	byWaypoint := map[string][]string{}
	for _, s := range g.Services {
		if id := svcWaypoint[s.Ref()]; s.Inspect && id != "" {
			byWaypoint[id] = append(byWaypoint[id], s.Ref())
		}
	}
	m := g.Settings.Meshwaf
	var callers []string
	for j := range d.Ports {
		dp := &d.Ports[j]
		if dp.Port != m.GRPCPort {
			continue
		}
		dp.Grants = slices.DeleteFunc(dp.Grants, func(gr Grant) bool { return gr.Why == WhyExtAuthz })
		for _, id := range sortedMapKeys(byWaypoint) {
			sort.Strings(byWaypoint[id])
			dp.Grants = append(dp.Grants, Grant{Principal: waypoints[id].Principal, Sources: []string{id}, Why: WhyExtAuthz})
			callers = append(callers, fmt.Sprintf("%s for %s", id, strings.Join(byWaypoint[id], ", ")))
		}
		sort.SliceStable(dp.Grants, func(a, b int) bool { return grantLess(dp.Grants[a], dp.Grants[b]) })
	}
	if len(callers) > 0 {
		d.Reason = fmt.Sprintf("the waypoints of the inspected services (%s) call meshwaf's ext_authz gRPC port %d for every request; without this ALLOW those calls fail and every inspected request is denied",
			strings.Join(callers, "; "), m.GRPCPort)
	} else {
		d.Reason = fmt.Sprintf("no inspected service has a waypoint, so nothing calls meshwaf's ext_authz gRPC port %d", m.GRPCPort)
	}
	if i := strings.Index(oldNote, "; the scraper "); i >= 0 {
		d.Reason += oldNote[i:]
	}
	for i, n := range p.Notes {
		if n == oldNote {
			p.Notes[i] = fmt.Sprintf("added %s/%s: %s", d.Namespace, d.PolicyName, d.Reason)
		}
	}
}

// Waypoints are the waypoint peers of an ambient plan, sorted by ID.
func (p *Plan) Waypoints() []Peer {
	var out []Peer
	for _, s := range p.Sources {
		if s.Kind == KindWaypoint {
			out = append(out, s)
		}
	}
	return out
}

// Via is the index of the source through which traffic from source s to
// destination d passes before d's ztunnel, or -1 when it arrives directly:
// graph services reach a destination behind a waypoint through it; the
// ingress gateway, the scraper and waypoints reach every workload directly.
func (p *Plan) Via(s, d int) int {
	w := p.Destinations[d].Waypoint
	if w == "" || p.Sources[s].Kind != KindService {
		return -1
	}
	for i, src := range p.Sources {
		if src.ID == w {
			return i
		}
	}
	return -1
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
