package discover

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Result is a graph with what was observed about each part of it.
type Result struct {
	Graph *meshpolicy.Graph
	// Header comments the whole document.
	Header       []string
	ServiceNotes map[string][]string
	EdgeNotes    map[EdgeKey][]string
	// Below are edges under --min-requests, written as comments.
	Below []string
	// Plaintext are flows from sources without an mTLS principal;
	// Unmapped are flows and Services that map onto no graph part.
	Plaintext, Unmapped []string
	// New and Vanished (with a base graph): edges observed but not in it,
	// and edges in it not observed in the lookback (kept).
	New, Vanished []EdgeKey
}

// Graph assembles the discovered graph. With base (a hand-edited graph,
// from baseFile), every service, edge and setting of base is kept as it
// is; discovered services and edges it lacks are added and listed in New,
// and its edges nobody used in the lookback are kept and listed in
// Vanished.
func (d *Discovery) Graph(base *meshpolicy.Graph, baseFile string) *Result {
	o := d.opts
	r := &Result{ServiceNotes: map[string][]string{}, EdgeNotes: map[EdgeKey][]string{},
		Plaintext: d.plaintext, Unmapped: d.unmapped}
	r.Header = append(r.Header,
		fmt.Sprintf("Discovered by meshwaf graph discover: %s and %s (reporter=\"destination\") over the %s before %s; first/last seen at %s resolution.",
			MetricRequests, MetricConnections, durationString(o.Lookback), stamp(o.At), durationString(o.Step)),
		"Services, ports, protocols, selectors and service accounts from the Kubernetes API.",
		"Istio's metrics carry no port: each edge is given every port of its destination service (its comment lists them).")
	r.Header = append(r.Header, d.header...)
	g := &meshpolicy.Graph{Name: o.Name, TrustDomain: o.TrustDomain}
	g.Settings.Meshwaf = d.meshwaf
	g.Settings.IngressGateway = ingressIdentity(o.IngressPrincipal)
	if base != nil {
		r.Header = append(r.Header, "Merged into "+baseFile+": its services, edges and settings are kept as written; new ones are marked.")
		g.Name, g.TrustDomain, g.Settings = base.Name, base.TrustDomain, base.Settings
	}

	have := map[string]bool{}
	if base != nil {
		for _, s := range base.Services {
			g.Services = append(g.Services, s)
			have[s.Ref()] = true
			r.ServiceNotes[s.Ref()] = append(r.ServiceNotes[s.Ref()], "from "+baseFile)
		}
	}
	// A client (a service without ports) is written only as the source of
	// an edge that is written.
	used := map[string]bool{}
	for k, obs := range d.edges {
		if obs.Total() >= o.MinRequests {
			used[k.From] = true
		}
	}
	for _, ref := range sortedKeys(d.services) {
		if have[ref] || (len(d.services[ref].Ports) == 0 && !used[ref]) {
			continue
		}
		s := *d.services[ref]
		s.Ingress = d.ingress[ref] != nil
		s.Inspect = s.Inspect || d.inspects[ref] != nil
		g.Services = append(g.Services, s)
		r.ServiceNotes[ref] = append(r.ServiceNotes[ref], d.serviceNotes[ref]...)
		if base != nil {
			r.ServiceNotes[ref] = append(r.ServiceNotes[ref], "new: not in "+baseFile)
		}
	}
	for i := range g.Services {
		s := &g.Services[i]
		ref := s.Ref()
		if obs := d.ingress[ref]; obs != nil {
			note := "ingress: the ingress gateway called it: " + obs.String()
			if !s.Ingress {
				note += "; but ingress is false in " + baseFile
			}
			r.ServiceNotes[ref] = append(r.ServiceNotes[ref], note)
		}
		if obs := d.inspects[ref]; obs != nil {
			note := "inspect: its sidecar called meshwaf: " + obs.String()
			if !s.Inspect {
				note += "; but inspect is false in " + baseFile
			}
			r.ServiceNotes[ref] = append(r.ServiceNotes[ref], note)
		}
	}

	seen := map[EdgeKey]bool{}
	if base != nil {
		for _, e := range base.Edges {
			k := EdgeKey{From: e.From, To: e.To}
			seen[k] = true
			g.Edges = append(g.Edges, e)
			if obs := d.edges[k]; obs != nil {
				r.EdgeNotes[k] = append(r.EdgeNotes[k], "observed: "+obs.String())
			} else {
				r.Vanished = append(r.Vanished, k)
				r.EdgeNotes[k] = append(r.EdgeNotes[k], fmt.Sprintf("vanished: not observed in the %s; kept as written in %s", durationString(o.Lookback), baseFile))
			}
		}
	}
	keys := make([]EdgeKey, 0, len(d.edges))
	for k := range d.edges {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].From != keys[j].From {
			return keys[i].From < keys[j].From
		}
		return keys[i].To < keys[j].To
	})
	index := make(map[string]*meshpolicy.Service, len(g.Services))
	for i := range g.Services {
		index[g.Services[i].Ref()] = &g.Services[i]
	}
	for _, k := range keys {
		obs := d.edges[k]
		to := index[k.To]
		var ports []int
		var list []string
		for _, p := range to.Ports {
			ports = append(ports, p.Port)
			list = append(list, strconv.Itoa(p.Port))
		}
		line := fmt.Sprintf("%s: %s", k, obs)
		switch {
		case obs.Total() < o.MinRequests:
			r.Below = append(r.Below, fmt.Sprintf("%s (below --min-requests %d)", line, o.MinRequests))
			continue
		case len(ports) == 0:
			r.Unmapped = append(r.Unmapped, line+": the destination declares no ports")
			continue
		}
		g.Edges = append(g.Edges, meshpolicy.Edge{From: k.From, To: k.To, Ports: ports})
		r.EdgeNotes[k] = append(r.EdgeNotes[k], "observed: "+obs.String(),
			fmt.Sprintf("ports %s: every port of %s (the metrics carry none)", strings.Join(list, ", "), k.To))
		if base != nil {
			r.New = append(r.New, k)
			r.EdgeNotes[k] = append(r.EdgeNotes[k], "new: not in "+baseFile)
		}
	}
	r.Graph = g
	return r
}

// ingressIdentity is the gateway identity of a principal, with the
// default selector.
func ingressIdentity(principal string) meshpolicy.Identity {
	id := meshpolicy.Identity{Selector: meshpolicy.DefaultIngressSelector()}
	if _, ns, sa, ok := meshpolicy.ParsePrincipal(principal); ok {
		id.Namespace, id.ServiceAccount = ns, sa
	} else {
		id.Principal = principal
	}
	return id
}

// durationString prints 7d, 12h, 90m rather than 168h0m0s.
func durationString(d interface{ String() string }) string {
	s := d.String()
	switch {
	case strings.HasSuffix(s, "h0m0s"):
		h, _ := strconv.Atoi(strings.TrimSuffix(s, "h0m0s"))
		if h%24 == 0 {
			return strconv.Itoa(h/24) + "d"
		}
		return strconv.Itoa(h) + "h"
	case strings.HasSuffix(s, "m0s"):
		return strings.TrimSuffix(s, "0s")
	}
	return s
}
