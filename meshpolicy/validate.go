package meshpolicy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// rawService and rawEdge keep the nodes that later checks point at.
type rawService struct {
	Service
	node, nameNode *yaml.Node
	path           fielderr.Path
}

type rawEdge struct {
	fromN, toN, portsN *yaml.Node
	portNodes          []*yaml.Node
	path               fielderr.Path
	Edge
	fromRaw, toRaw string
}

var (
	reTrustDomain = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	reMethod      = regexp.MustCompile(`^[A-Z]+$`)
	protocols     = []string{"HTTP", "HTTP2", "GRPC", "TCP", "TLS"}
)

func (d *decoder) graph(root *yaml.Node) *Graph {
	top := d.fields(root, nil, "apiVersion", "kind", "metadata", "spec")
	if deref(root).Kind != yaml.MappingNode {
		return nil
	}
	g := &Graph{TrustDomain: DefaultTrustDomain}
	if n, ok := top["apiVersion"]; !ok {
		d.fail(root, fielderr.At("apiVersion"), "missing; want %s", APIVersion)
	} else if v := d.str(n, fielderr.At("apiVersion")); v != APIVersion && deref(n).Tag == "!!str" {
		d.fail(deref(n), fielderr.At("apiVersion"), "%q is not %s", v, APIVersion)
	}
	if n, ok := top["kind"]; !ok {
		d.fail(root, fielderr.At("kind"), "missing; want %s", Kind)
	} else if v := d.str(n, fielderr.At("kind")); v != Kind && deref(n).Tag == "!!str" {
		d.fail(deref(n), fielderr.At("kind"), "%q is not %s", v, Kind)
	}
	if n, ok := top["metadata"]; !ok {
		d.fail(root, fielderr.At("metadata"), "missing; want metadata.name")
	} else {
		md := d.fields(n, fielderr.At("metadata"), "name", "labels", "annotations")
		if nn, ok := md["name"]; ok {
			g.Name = d.dnsSubdomain(nn, fielderr.At("metadata", "name"), "name")
		} else {
			d.fail(deref(n), fielderr.At("metadata", "name"), "missing")
		}
		if ln, ok := md["labels"]; ok {
			d.labels(ln, fielderr.At("metadata", "labels"))
		}
		if an, ok := md["annotations"]; ok {
			for k, v := range d.fields(an, fielderr.At("metadata", "annotations"), annotationKeys(an)...) {
				d.str(v, fielderr.At("metadata", "annotations").Key(k))
			}
		}
	}
	specN, ok := top["spec"]
	if !ok {
		d.fail(root, fielderr.At("spec"), "missing")
		return g
	}
	spec := d.fields(specN, fielderr.At("spec"), "trustDomain", "settings", "services", "edges")
	if n, ok := spec["trustDomain"]; ok {
		td := d.str(n, fielderr.At("spec", "trustDomain"))
		if deref(n).Tag == "!!str" && !reTrustDomain.MatchString(td) {
			d.fail(deref(n), fielderr.At("spec", "trustDomain"), "invalid trust domain %q: want letters, digits, '.', '-' or '_'", td)
		}
		g.TrustDomain = td
	}
	g.Settings = d.settings(spec["settings"], fielderr.At("spec", "settings"), g.TrustDomain)
	var svcs []rawService
	if n, ok := spec["services"]; ok {
		for i, sn := range d.seq(n, fielderr.At("spec", "services")) {
			svcs = append(svcs, d.service(sn, fielderr.At("spec", "services").Index(i)))
		}
	}
	if len(svcs) == 0 {
		at := deref(specN)
		if n, ok := spec["services"]; ok {
			at = deref(n)
		}
		d.fail(at, fielderr.At("spec", "services"), "want at least one service")
	}
	var edges []rawEdge
	if n, ok := spec["edges"]; ok {
		for i, en := range d.seq(n, fielderr.At("spec", "edges")) {
			edges = append(edges, d.edge(en, fielderr.At("spec", "edges").Index(i)))
		}
	}
	d.checkServices(svcs)
	d.resolveEdges(svcs, edges)
	for _, s := range svcs {
		g.Services = append(g.Services, s.Service)
	}
	for _, e := range edges {
		g.Edges = append(g.Edges, e.Edge)
	}
	return g
}

func annotationKeys(n *yaml.Node) []string {
	n = deref(n)
	var keys []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			keys = append(keys, n.Content[i].Value)
		}
	}
	return keys
}

func (d *decoder) settings(n *yaml.Node, path fielderr.Path, trustDomain string) Settings {
	s := Settings{
		Meshwaf: Meshwaf{
			Namespace: DefaultMeshwafNamespace, ServiceAccount: DefaultMeshwafSA,
			Selector: DefaultMeshwafSelector(), GRPCPort: DefaultGRPCPort, MetricsPort: DefaultMetricsPort,
		},
		IngressGateway: Identity{Namespace: DefaultIngressNamespace, ServiceAccount: DefaultIngressSA, Selector: DefaultIngressSelector()},
	}
	if n == nil {
		return s
	}
	f := d.fields(n, path, "meshwaf", "scraper", "ingressGateway")
	if mn, ok := f["meshwaf"]; ok {
		mp := path.Field("meshwaf")
		m := d.fields(mn, mp, "namespace", "serviceAccount", "selector", "grpcPort", "metricsPort")
		if v, ok := m["namespace"]; ok {
			s.Meshwaf.Namespace = d.dnsLabel(v, mp.Field("namespace"), "namespace")
		}
		if v, ok := m["serviceAccount"]; ok {
			s.Meshwaf.ServiceAccount = d.dnsSubdomain(v, mp.Field("serviceAccount"), "service account")
		}
		if v, ok := m["selector"]; ok {
			s.Meshwaf.Selector = d.labels(v, mp.Field("selector"))
		}
		if v, ok := m["grpcPort"]; ok {
			s.Meshwaf.GRPCPort, _ = d.port(v, mp.Field("grpcPort"))
		}
		if v, ok := m["metricsPort"]; ok {
			s.Meshwaf.MetricsPort, _ = d.port(v, mp.Field("metricsPort"))
			if s.Meshwaf.MetricsPort == s.Meshwaf.GRPCPort && s.Meshwaf.GRPCPort != 0 {
				d.fail(deref(v), mp.Field("metricsPort"), "must differ from grpcPort %d", s.Meshwaf.GRPCPort)
			}
		}
	}
	if v, ok := f["scraper"]; ok && !isNull(deref(v)) {
		id := d.identity(v, path.Field("scraper"), Identity{}, trustDomain)
		s.Scraper = &id
	}
	if v, ok := f["ingressGateway"]; ok {
		s.IngressGateway = d.identity(v, path.Field("ingressGateway"), Identity{Selector: DefaultIngressSelector()}, trustDomain)
	}
	return s
}

// identity decodes {principal} or {namespace, serviceAccount}, plus an
// optional selector; def supplies the default selector. A principal in the
// trust domain cluster.local is an error when the graph's is another one:
// Istio reads cluster.local in a policy's principal as the mesh's own trust
// domain, so the rendered policy would admit someone else.
func (d *decoder) identity(n *yaml.Node, path fielderr.Path, def Identity, trustDomain string) Identity {
	id := def
	f := d.fields(n, path, "principal", "namespace", "serviceAccount", "selector")
	if v, ok := f["principal"]; ok {
		id.Principal = d.str(v, path.Field("principal"))
		switch {
		case strings.HasPrefix(id.Principal, "spiffe://"):
			d.fail(deref(v), path.Field("principal"), "drop the spiffe:// prefix: Istio principals are <trustDomain>/ns/<namespace>/sa/<serviceAccount>")
		case id.Principal == "" || strings.ContainsAny(id.Principal, " \t*"):
			d.fail(deref(v), path.Field("principal"), "invalid principal %q: want <trustDomain>/ns/<namespace>/sa/<serviceAccount>", id.Principal)
		}
		if _, ok := f["namespace"]; ok {
			d.fail(deref(v), path.Field("principal"), "set either principal or namespace and serviceAccount, not both")
		}
		if td, ns, sa, ok := ParsePrincipal(id.Principal); ok {
			id.Namespace = ns
			if td == DefaultTrustDomain && trustDomain != DefaultTrustDomain {
				d.fail(deref(v), path.Field("principal"), "trust domain %s: Istio reads it in a policy as the mesh's own trust domain %s, so the policy would admit %s instead",
					td, trustDomain, Principal(trustDomain, ns, sa))
			}
		}
	} else {
		nv, nok := f["namespace"]
		sv, sok := f["serviceAccount"]
		if !nok || !sok {
			d.fail(deref(n), path, "set principal, or both namespace and serviceAccount")
		}
		if nok {
			id.Namespace = d.dnsLabel(nv, path.Field("namespace"), "namespace")
		}
		if sok {
			id.ServiceAccount = d.dnsSubdomain(sv, path.Field("serviceAccount"), "service account")
		}
	}
	if v, ok := f["selector"]; ok {
		id.Selector = d.labels(v, path.Field("selector"))
	}
	return id
}

func (d *decoder) service(n *yaml.Node, path fielderr.Path) rawService {
	f := d.fields(n, path, "name", "namespace", "serviceAccount", "selector", "ports", "ingress", "inspect", "waypoint")
	rs := rawService{node: deref(n), path: path}
	s := &rs.Service
	s.Namespace = DefaultServiceNamespace
	if v, ok := f["name"]; ok {
		rs.nameNode = deref(v)
		s.Name = d.dnsLabel(v, path.Field("name"), "service name")
	} else {
		d.fail(deref(n), path.Field("name"), "missing")
	}
	if v, ok := f["namespace"]; ok {
		s.Namespace = d.dnsLabel(v, path.Field("namespace"), "namespace")
	}
	s.ServiceAccount = s.Name
	if v, ok := f["serviceAccount"]; ok {
		s.ServiceAccount = d.dnsSubdomain(v, path.Field("serviceAccount"), "service account")
	}
	if v, ok := f["selector"]; ok {
		s.Selector = d.labels(v, path.Field("selector"))
	} else if s.Name != "" {
		s.Selector = map[string]string{defaultSelectorLabelName: s.Name}
	}
	if v, ok := f["ports"]; ok {
		seen := map[int]int{}
		for i, pn := range d.seq(v, path.Field("ports")) {
			pp := path.Field("ports").Index(i)
			pf := d.fields(pn, pp, "port", "protocol", "metrics")
			p := Port{Protocol: DefaultProtocol}
			if v, ok := pf["port"]; ok {
				var good bool
				if p.Port, good = d.port(v, pp.Field("port")); good {
					if line, dup := seen[p.Port]; dup {
						d.fail(deref(v), pp.Field("port"), "duplicate port %d (first on line %d)", p.Port, line)
					}
					seen[p.Port] = deref(v).Line
				}
			} else {
				d.fail(deref(pn), pp.Field("port"), "missing")
			}
			if v, ok := pf["protocol"]; ok {
				p.Protocol = d.str(v, pp.Field("protocol"))
				if deref(v).Tag == "!!str" && !contains(protocols, p.Protocol) {
					d.fail(deref(v), pp.Field("protocol"), "%q is not one of %s", p.Protocol, strings.Join(protocols, ", "))
				}
			}
			if v, ok := pf["metrics"]; ok {
				p.Metrics = d.boolean(v, pp.Field("metrics"))
			}
			s.Ports = append(s.Ports, p)
		}
	}
	if v, ok := f["ingress"]; ok {
		s.Ingress = d.boolean(v, path.Field("ingress"))
	}
	if v, ok := f["inspect"]; ok {
		s.Inspect = d.boolean(v, path.Field("inspect"))
	}
	if v, ok := f["waypoint"]; ok {
		// The waypoint's Deployment, Service and ServiceAccount carry the
		// Gateway's name, so it must be a DNS label.
		s.Waypoint = d.dnsLabel(v, path.Field("waypoint"), "waypoint name")
	}
	return rs
}

func (d *decoder) edge(n *yaml.Node, path fielderr.Path) rawEdge {
	f := d.fields(n, path, "from", "to", "ports", "methods", "paths")
	e := rawEdge{path: path, fromN: deref(n), toN: deref(n)}
	if v, ok := f["from"]; ok {
		e.fromN, e.fromRaw = deref(v), d.str(v, path.Field("from"))
	} else {
		d.fail(deref(n), path.Field("from"), "missing")
	}
	if v, ok := f["to"]; ok {
		e.toN, e.toRaw = deref(v), d.str(v, path.Field("to"))
	} else {
		d.fail(deref(n), path.Field("to"), "missing")
	}
	if v, ok := f["ports"]; ok {
		e.portsN = deref(v)
		seen := map[int]bool{}
		for i, pn := range d.seq(v, path.Field("ports")) {
			pp := path.Field("ports").Index(i)
			p, good := d.port(pn, pp)
			if !good {
				continue
			}
			if seen[p] {
				d.fail(deref(pn), pp, "duplicate port %d", p)
				continue
			}
			seen[p] = true
			e.Ports = append(e.Ports, p)
			e.portNodes = append(e.portNodes, deref(pn))
		}
		if len(e.Ports) == 0 && len(seen) == 0 && !isNull(deref(v)) && deref(v).Kind == yaml.SequenceNode {
			d.fail(deref(v), path.Field("ports"), "empty list: omit ports to allow every port of the target")
		}
	}
	if v, ok := f["methods"]; ok {
		seen := map[string]bool{}
		for i, mn := range d.seq(v, path.Field("methods")) {
			mp := path.Field("methods").Index(i)
			m := d.str(mn, mp)
			switch {
			case deref(mn).Tag != "!!str":
			case !reMethod.MatchString(m):
				d.fail(deref(mn), mp, "invalid HTTP method %q: want upper-case letters, e.g. GET", m)
			case seen[m]:
				d.fail(deref(mn), mp, "duplicate method %q", m)
			default:
				seen[m] = true
				e.Methods = append(e.Methods, m)
			}
		}
	}
	if v, ok := f["paths"]; ok {
		seen := map[string]bool{}
		for i, pn := range d.seq(v, path.Field("paths")) {
			pp := path.Field("paths").Index(i)
			p := d.str(pn, pp)
			switch {
			case deref(pn).Tag != "!!str":
			case !validPath(p):
				d.fail(deref(pn), pp, "invalid path %q: want /exact, /prefix*, *suffix or *", p)
			case seen[p]:
				d.fail(deref(pn), pp, "duplicate path %q", p)
			default:
				seen[p] = true
				e.Paths = append(e.Paths, p)
			}
		}
	}
	sort.Strings(e.Methods)
	sort.Strings(e.Paths)
	return e
}

// validPath accepts Istio's path forms: exact, prefix ("/a/*"), suffix
// ("*.html") and presence ("*").
func validPath(p string) bool {
	if p == "*" {
		return true
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(p, "*"), "*")
	if inner == "" || strings.Contains(inner, "*") || strings.ContainsAny(p, " \t") {
		return false
	}
	if strings.HasPrefix(p, "*") && strings.HasSuffix(p, "*") {
		return false
	}
	return strings.HasPrefix(p, "/") || strings.HasPrefix(p, "*")
}

func (d *decoder) checkServices(svcs []rawService) {
	first := map[string]int{}
	for _, s := range svcs {
		if s.Name == "" {
			continue
		}
		ref := s.Ref()
		if line, dup := first[ref]; dup {
			d.fail(s.nameNode, s.path.Field("name"), "duplicate service %s (first on line %d)", ref, line)
			continue
		}
		first[ref] = s.nameNode.Line
	}
}

// serviceIndex finds services by "namespace/name" and by name.
type serviceIndex struct {
	byRef  map[string]*rawService
	byName map[string][]*rawService
}

func newServiceIndex(svcs []rawService) serviceIndex {
	ix := serviceIndex{byRef: map[string]*rawService{}, byName: map[string][]*rawService{}}
	for i := range svcs {
		s := &svcs[i]
		if s.Name == "" {
			continue
		}
		if _, dup := ix.byRef[s.Ref()]; !dup {
			ix.byRef[s.Ref()] = s
			ix.byName[s.Name] = append(ix.byName[s.Name], s)
		}
	}
	return ix
}

func (d *decoder) resolve(ix serviceIndex, ref string, n *yaml.Node, path fielderr.Path) (*rawService, bool) {
	if ref == "" {
		return nil, false
	}
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Label(name)) > 0 {
			d.fail(n, path, "invalid reference %q: want name or namespace/name", ref)
			return nil, false
		}
		if s, ok := ix.byRef[ref]; ok {
			return s, true
		}
		d.fail(n, path, "unknown service %q", ref)
		return nil, false
	}
	matches := ix.byName[ref]
	switch len(matches) {
	case 0:
		d.fail(n, path, "unknown service %q", ref)
		return nil, false
	case 1:
		return matches[0], true
	}
	var refs []string
	for _, m := range matches {
		refs = append(refs, m.Ref())
	}
	sort.Strings(refs)
	d.fail(n, path, "ambiguous reference %q matches %s: write namespace/name", ref, strings.Join(refs, ", "))
	return nil, false
}

func (d *decoder) resolveEdges(svcs []rawService, edges []rawEdge) {
	type key struct {
		from, to string
		port     int
	}
	first := map[key]int{}
	ix := newServiceIndex(svcs)
	for i := range edges {
		e := &edges[i]
		from, fok := d.resolve(ix, e.fromRaw, e.fromN, e.path.Field("from"))
		to, tok := d.resolve(ix, e.toRaw, e.toN, e.path.Field("to"))
		if fok {
			e.From = from.Ref()
		}
		if !tok {
			continue
		}
		e.To = to.Ref()
		if e.portsN == nil {
			if len(to.Ports) == 0 {
				d.fail(e.toN, e.path.Field("to"), "service %s declares no ports", e.To)
			}
			for _, p := range to.Ports {
				if !p.Metrics {
					e.Ports = append(e.Ports, p.Port)
					e.portNodes = append(e.portNodes, e.toN)
				}
			}
		}
		for j, p := range e.Ports {
			pp := e.path.Field("ports").Index(j)
			if e.portsN == nil {
				pp = e.path.Field("to")
			}
			sp, ok := to.Port(p)
			if !ok {
				d.fail(e.portNodes[j], pp, "port %d is not declared on %s (declared: %s)", p, e.To, portList(to.Ports))
				continue
			}
			if e.Narrowed() && !sp.IsHTTP() {
				d.fail(e.portNodes[j], pp, "port %d of %s is %s: methods and paths need HTTP, HTTP2 or GRPC", p, e.To, sp.Protocol)
			}
			if fok {
				k := key{e.From, e.To, p}
				if line, dup := first[k]; dup {
					d.fail(e.portNodes[j], pp, "duplicate edge %s -> %s port %d (first on line %d)", e.From, e.To, p, line)
				} else {
					first[k] = e.portNodes[j].Line
				}
			}
		}
	}
}

func portList(ports []Port) string {
	if len(ports) == 0 {
		return "none"
	}
	var s []string
	for _, p := range ports {
		s = append(s, fmt.Sprint(p.Port))
	}
	return strings.Join(s, ", ")
}
