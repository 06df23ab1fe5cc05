package meshpolicy

import (
	"slices"
	"sort"
)

// Egress is what one graph service may call: the caller's side of the
// plan's grants.
type Egress struct {
	// Source is the calling service.
	Source Peer
	// Calls are its destinations sorted by ID, each once.
	Calls []EgressCall
}

// EgressCall is one destination a source may call and on which ports.
type EgressCall struct {
	// Dest is the destination workload (a graph service or meshwaf).
	Dest Peer
	// Ports sorted, each with the protocol the destination declares.
	Ports []DestPort
	// Why lists the grant reasons (WhyEdge, WhyExtAuthz), sorted.
	Why []string
}

// Egress derives, for every graph service sorted by ID, the destinations
// its own grants name it as a source of: its edges and, when inspected,
// meshwaf's gRPC port. It is per workload, not per principal: services that
// share a principal keep their own destinations (the ingress side cannot
// tell them apart, the caller's side can). A service that calls nothing
// has an Egress with no Calls. The grant copies on the returned ports are
// left empty.
func (p *Plan) Egress() []Egress {
	idx := map[string]int{}
	var out []Egress
	for _, s := range p.Sources {
		if s.Kind == KindService {
			idx[s.ID] = len(out)
			out = append(out, Egress{Source: s})
		}
	}
	for _, d := range p.Destinations {
		for _, dp := range d.Ports {
			for _, gr := range dp.Grants {
				for _, src := range gr.Sources {
					i, ok := idx[src]
					if !ok {
						continue
					}
					out[i].add(d.Peer, DestPort{Port: dp.Port, Protocol: dp.Protocol, Metrics: dp.Metrics}, gr.Why)
				}
			}
		}
	}
	for i := range out {
		calls := out[i].Calls
		sort.Slice(calls, func(a, b int) bool { return calls[a].Dest.ID < calls[b].Dest.ID })
		for j := range calls {
			sort.Slice(calls[j].Ports, func(a, b int) bool { return calls[j].Ports[a].Port < calls[j].Ports[b].Port })
			sort.Strings(calls[j].Why)
		}
	}
	return out
}

func (e *Egress) add(dest Peer, port DestPort, why string) {
	i := slices.IndexFunc(e.Calls, func(c EgressCall) bool { return c.Dest.ID == dest.ID })
	if i < 0 {
		e.Calls = append(e.Calls, EgressCall{Dest: dest})
		i = len(e.Calls) - 1
	}
	c := &e.Calls[i]
	if !slices.ContainsFunc(c.Ports, func(p DestPort) bool { return p.Port == port.Port }) {
		c.Ports = append(c.Ports, port)
	}
	if !slices.Contains(c.Why, why) {
		c.Why = append(c.Why, why)
	}
}
