package discover

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Options say how flows and the inventory become a graph.
type Options struct {
	// Name is the graph's metadata.name.
	Name        string
	TrustDomain string
	// MinRequests: an edge observed fewer times (requests plus
	// connections) is written as a comment, not an edge.
	MinRequests int64
	// Lookback, At and Step are what the flows were read with (for the
	// header comment).
	Lookback time.Duration
	At       time.Time
	Step     time.Duration
	// ExcludeNamespaces hold no graph services (kube-system, istio-system).
	ExcludeNamespaces []string
	// Namespaces, when set, are the only ones whose Services become graph
	// services (meshwaf's own is recognised wherever it is).
	Namespaces []string
	// MeshwafNamespace and MeshwafService locate meshwaf's own Service: it
	// becomes settings.meshwaf, not a service, and its callers inspect: true.
	MeshwafNamespace, MeshwafService string
	// IngressPrincipal is the ingress gateway's principal; a source with it,
	// or whose workload carries IngressLabel, makes its destination
	// ingress: true instead of an edge.
	IngressPrincipal string
	IngressLabel     [2]string
	// OptInLabel marks workloads under meshwaf inspection (inspect: true).
	OptInLabel [2]string
}

// EdgeKey is an edge between two graph services ("namespace/name").
type EdgeKey struct{ From, To string }

func (k EdgeKey) String() string { return k.From + " -> " + k.To }

// Observation sums what the flows of one edge (or into one service) showed.
type Observation struct {
	Requests, Connections int64
	First, Last           time.Time
}

func (o *Observation) add(f Flow) {
	o.Requests += f.Requests
	o.Connections += f.Connections
	if !f.First.IsZero() && (o.First.IsZero() || f.First.Before(o.First)) {
		o.First = f.First
	}
	if f.Last.After(o.Last) {
		o.Last = f.Last
	}
}

// Total is requests plus connections: what --min-requests compares.
func (o Observation) Total() int64 { return o.Requests + o.Connections }

func (o Observation) String() string {
	var parts []string
	if o.Requests > 0 || o.Connections == 0 {
		parts = append(parts, fmt.Sprintf("%d requests", o.Requests))
	}
	if o.Connections > 0 {
		parts = append(parts, fmt.Sprintf("%d TCP connections", o.Connections))
	}
	s := strings.Join(parts, ", ")
	if !o.First.IsZero() {
		s += ", first seen " + stamp(o.First) + ", last seen " + stamp(o.Last)
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04Z") }

// Discovery is what Build found: the services, the observed edges and
// everything reported about them. Graph turns it into a graph.
type Discovery struct {
	opts     Options
	services map[string]*meshpolicy.Service
	// serviceNotes and inbound are per service ref.
	serviceNotes map[string][]string
	edges        map[EdgeKey]*Observation
	ingress      map[string]*Observation
	inspects     map[string]*Observation
	meshwaf      meshpolicy.Meshwaf
	header       []string
	// plaintext and unmapped are flows reported, not made edges.
	plaintext, unmapped []string
}

// Build maps flows onto the inventory's services. Sources that called
// without mTLS and flows that map onto no graph service are reported, never
// silently dropped.
func Build(inv *Inventory, flows []Flow, o Options) *Discovery {
	d := &Discovery{opts: o, services: map[string]*meshpolicy.Service{}, serviceNotes: map[string][]string{},
		edges: map[EdgeKey]*Observation{}, ingress: map[string]*Observation{}, inspects: map[string]*Observation{}}
	d.meshwaf = meshpolicy.Meshwaf{Namespace: o.MeshwafNamespace, ServiceAccount: meshpolicy.DefaultMeshwafSA,
		Selector: meshpolicy.DefaultMeshwafSelector(), GRPCPort: meshpolicy.DefaultGRPCPort, MetricsPort: meshpolicy.DefaultMetricsPort}
	excluded := map[string]bool{}
	for _, ns := range o.ExcludeNamespaces {
		excluded[ns] = true
	}
	if len(o.Namespaces) > 0 {
		only := map[string]bool{}
		for _, ns := range o.Namespaces {
			only[ns] = true
		}
		for _, s := range inv.Services {
			if !only[s.Namespace] {
				excluded[s.Namespace] = true
			}
		}
		for _, w := range inv.Workloads {
			if !only[w.Namespace] {
				excluded[w.Namespace] = true
			}
		}
	}
	workloads := map[string]*Workload{}
	for i := range inv.Workloads {
		workloads[inv.Workloads[i].Ref()] = &inv.Workloads[i]
	}
	// Graph services selecting each workload, and meshwaf's.
	wlServices := map[string][]string{}
	byNS := map[string][]Workload{}
	for _, w := range inv.Workloads {
		byNS[w.Namespace] = append(byNS[w.Namespace], w)
	}
	meshwafRef := o.MeshwafNamespace + "/" + o.MeshwafService
	meshwafFound := false
	for _, ks := range inv.Services {
		if ks.Ref() == meshwafRef {
			meshwafFound = true
			d.meshwafFrom(ks, byNS[ks.Namespace])
			continue
		}
		if excluded[ks.Namespace] {
			continue
		}
		if len(ks.Selector) == 0 {
			d.unmapped = append(d.unmapped, fmt.Sprintf("Service %s has no selector (no pods of its own): not in the graph", ks.Ref()))
			continue
		}
		d.addService(ks, byNS[ks.Namespace], inv.ServiceAccounts, wlServices)
	}
	if meshwafFound {
		d.header = append(d.header, fmt.Sprintf("settings.meshwaf: from Service %s (recognised by --meshwaf-namespace and --meshwaf-service)", meshwafRef))
	} else {
		d.header = append(d.header, fmt.Sprintf("settings.meshwaf: Service %s not found; the defaults are written", meshwafRef))
	}
	d.header = append(d.header, fmt.Sprintf("ingress gateway: a source with principal %s or whose workload has the label %s=%s; it makes its destination ingress: true",
		o.IngressPrincipal, o.IngressLabel[0], o.IngressLabel[1]))

	bySA := map[string]string{}
	for _, ref := range sortedKeys(d.services) {
		if s := d.services[ref]; len(s.Ports) > 0 {
			if _, ok := bySA[s.Namespace+"/"+s.ServiceAccount]; !ok {
				bySA[s.Namespace+"/"+s.ServiceAccount] = ref
			}
		}
	}
	for _, f := range flows {
		d.addFlow(f, workloads, wlServices, bySA, excluded, meshwafRef)
	}
	return d
}

func (d *Discovery) meshwafFrom(ks KService, workloads []Workload) {
	m := &d.meshwaf
	m.Namespace = ks.Namespace
	// The default selector when it selects meshwaf's pods too (the graph
	// stays minimal), else the Service's.
	def := KService{Namespace: ks.Namespace, Selector: meshpolicy.DefaultMeshwafSelector()}
	keepDefault := len(ks.Selector) == 0
	first := true
	for _, w := range workloads {
		if ks.Selects(w) {
			if first {
				m.ServiceAccount = w.ServiceAccount
				keepDefault = true
				first = false
			}
			keepDefault = keepDefault && def.Selects(w)
		}
	}
	if !keepDefault {
		m.Selector = copyLabels(ks.Selector)
	}
	for _, p := range ks.Ports {
		switch {
		case p.Protocol == "GRPC" || strings.HasPrefix(p.Name, "grpc"):
			m.GRPCPort = p.Port
		case strings.Contains(p.Name, "metrics") || strings.HasPrefix(p.Name, "admin"):
			m.MetricsPort = p.Port
		}
	}
}

func (d *Discovery) addService(ks KService, workloads []Workload, accounts map[string]bool, wlServices map[string][]string) {
	o := d.opts
	s := &meshpolicy.Service{Name: ks.Name, Namespace: ks.Namespace, Selector: copyLabels(ks.Selector)}
	var notes []string
	sas := map[string]bool{}
	var selected []string
	for _, w := range workloads {
		if !ks.Selects(w) {
			continue
		}
		wlServices[w.Ref()] = append(wlServices[w.Ref()], ks.Ref())
		sas[w.ServiceAccount] = true
		selected = append(selected, fmt.Sprintf("%s %s (sa %s)", w.Kind, w.Name, w.ServiceAccount))
		if o.OptInLabel[0] != "" && w.Labels[o.OptInLabel[0]] == o.OptInLabel[1] {
			s.Inspect = true
		}
	}
	switch accounts := sortedKeys(sas); len(accounts) {
	case 0:
		s.ServiceAccount = "default"
		notes = append(notes, "selects no Deployment, StatefulSet or DaemonSet: serviceAccount default assumed")
	case 1:
		s.ServiceAccount = accounts[0]
		notes = append(notes, "selects "+strings.Join(selected, ", "))
	default:
		s.ServiceAccount = accounts[0]
		notes = append(notes, fmt.Sprintf("selects workloads with several service accounts (%s); the first is written: check it", strings.Join(accounts, ", ")))
	}
	if !accounts[ks.Namespace+"/"+s.ServiceAccount] && len(sas) > 0 {
		notes = append(notes, fmt.Sprintf("ServiceAccount %s/%s does not exist", ks.Namespace, s.ServiceAccount))
	}
	var ports []string
	seen := map[int]bool{}
	for _, p := range ks.Ports {
		if p.UDP || seen[p.Port] {
			continue
		}
		seen[p.Port] = true
		s.Ports = append(s.Ports, meshpolicy.Port{Port: p.Port, Protocol: p.Protocol})
		ports = append(ports, fmt.Sprintf("%d %s (%s)", p.Port, p.Protocol, p.From))
	}
	if len(ports) > 0 {
		notes = append(notes, "ports: "+strings.Join(ports, ", "))
	}
	if s.Inspect {
		notes = append(notes, fmt.Sprintf("inspect: its pods carry %s=%s", o.OptInLabel[0], o.OptInLabel[1]))
	}
	d.services[s.Ref()] = s
	d.serviceNotes[s.Ref()] = notes
}

func (d *Discovery) addFlow(f Flow, workloads map[string]*Workload, wlServices map[string][]string, bySA map[string]string, excluded map[string]bool, meshwafRef string) {
	o := d.opts
	desc := fmt.Sprintf("%s -> %s: %s", f.sourceName(), f.destName(), (&Observation{}).with(f))
	// The destination: the Service the metrics name, else the Services
	// selecting the destination workload.
	var to string
	switch {
	case f.DestService != "" && f.DestServiceNamespace != "":
		to = f.DestServiceNamespace + "/" + f.DestService
	case f.DestWorkload != "":
		if refs := wlServices[f.DestNamespace+"/"+f.DestWorkload]; len(refs) > 0 {
			to = refs[0]
		}
	}
	toMeshwaf := to == meshwafRef || (f.DestNamespace == o.MeshwafNamespace && f.DestWorkload == o.MeshwafService)
	if !toMeshwaf {
		if _, ok := d.services[to]; !ok {
			d.unmapped = append(d.unmapped, desc+": the destination is no service of the graph (no Service, no selector, or an excluded namespace)")
			return
		}
	}
	if !f.MTLS() {
		d.plaintext = append(d.plaintext, fmt.Sprintf("%s (principal %q, connection_security_policy %q): AuthorizationPolicies on principals deny it",
			desc, f.SourcePrincipal, f.Security))
		return
	}
	src := workloads[f.SourceNamespace+"/"+f.SourceWorkload]
	if f.SourcePrincipal == o.IngressPrincipal || (src != nil && o.IngressLabel[0] != "" && src.Labels[o.IngressLabel[0]] == o.IngressLabel[1]) {
		if toMeshwaf {
			return // the gateway's own ext_authz calls
		}
		obs := d.ingress[to]
		if obs == nil {
			obs = &Observation{}
			d.ingress[to] = obs
		}
		obs.add(f)
		return
	}
	from := d.sourceService(f, src, wlServices, bySA, excluded)
	if from == "" {
		d.unmapped = append(d.unmapped, desc+": the source is in an excluded namespace")
		return
	}
	if toMeshwaf {
		// A sidecar calling meshwaf is a workload under inspection.
		obs := d.inspects[from]
		if obs == nil {
			obs = &Observation{}
			d.inspects[from] = obs
		}
		obs.add(f)
		return
	}
	k := EdgeKey{From: from, To: to}
	obs := d.edges[k]
	if obs == nil {
		obs = &Observation{}
		d.edges[k] = obs
	}
	obs.add(f)
}

// sourceService is the graph service a flow's source maps to: a Service
// selecting its workload, else one with its principal's service account,
// else a service of its own without ports (a client).
func (d *Discovery) sourceService(f Flow, w *Workload, wlServices map[string][]string, bySA map[string]string, excluded map[string]bool) string {
	td, ns, sa, ok := meshpolicy.ParsePrincipal(f.SourcePrincipal)
	if !ok {
		ns, sa = f.SourceNamespace, ""
	}
	if excluded[ns] {
		return ""
	}
	if refs := wlServices[f.SourceNamespace+"/"+f.SourceWorkload]; len(refs) > 0 && f.SourceNamespace == ns {
		return refs[0]
	}
	if ref, ok := bySA[ns+"/"+sa]; ok {
		return ref
	}
	name := f.SourceWorkload
	if name == "" {
		name = sa
	}
	ref := ns + "/" + name
	if s, ok := d.services[ref]; ok {
		if s.ServiceAccount == sa {
			return ref
		}
		ref += "-client"
		name += "-client"
		if _, ok := d.services[ref]; ok {
			return ref
		}
	}
	s := &meshpolicy.Service{Name: name, Namespace: ns, ServiceAccount: sa}
	notes := []string{"a client: no Service selects it; serviceAccount from its principal " + f.SourcePrincipal}
	if td != d.opts.TrustDomain {
		notes = append(notes, fmt.Sprintf("its principal's trust domain %s is not the graph's %s", td, d.opts.TrustDomain))
	}
	if w != nil {
		s.Selector = clientSelector(w.Labels)
		notes = append(notes, fmt.Sprintf("selector from %s %s", w.Kind, w.Name))
		if d.opts.OptInLabel[0] != "" && w.Labels[d.opts.OptInLabel[0]] == d.opts.OptInLabel[1] {
			s.Inspect = true
		}
	} else {
		s.Selector = map[string]string{"app": name}
		notes = append(notes, fmt.Sprintf("workload %s/%s not found in the API: selector app=%s assumed", f.SourceNamespace, f.SourceWorkload, name))
	}
	d.services[ref] = s
	d.serviceNotes[ref] = notes
	return ref
}

// clientSelector picks the app label when there is one, else every label.
func clientSelector(labels map[string]string) map[string]string {
	for _, k := range []string{"app", "app.kubernetes.io/name"} {
		if v, ok := labels[k]; ok {
			return map[string]string{k: v}
		}
	}
	return copyLabels(labels)
}

func (o *Observation) with(f Flow) *Observation {
	o.add(f)
	return o
}

func (f Flow) sourceName() string {
	if f.SourceWorkload == "" {
		return "unknown source"
	}
	return f.SourceNamespace + "/" + f.SourceWorkload
}

func (f Flow) destName() string {
	if f.DestService != "" {
		return f.DestServiceNamespace + "/" + f.DestService
	}
	return f.DestNamespace + "/" + f.DestWorkload
}

func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
