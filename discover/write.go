package discover

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Write renders r as a ServiceGraph document with its observations as
// comments. The output is a function of r alone (sorted, no map order) and
// is decoded with meshpolicy.Decode before it is written: Write never
// writes a graph that does not validate.
func Write(w io.Writer, r *Result) error {
	g := r.Graph
	spec := mapping(false)
	add(spec, "trustDomain", scalar(g.TrustDomain))
	add(spec, "settings", settingsNode(g.Settings))
	svcs := &yaml.Node{Kind: yaml.SequenceNode}
	for _, s := range g.Services {
		n := serviceNode(s)
		n.HeadComment = comment(append([]string{s.Ref()}, r.ServiceNotes[s.Ref()]...))
		svcs.Content = append(svcs.Content, n)
	}
	add(spec, "services", svcs)
	edges := &yaml.Node{Kind: yaml.SequenceNode}
	if len(g.Edges) == 0 {
		edges.Style = yaml.FlowStyle
	}
	for _, e := range g.Edges {
		k := EdgeKey{From: e.From, To: e.To}
		n := edgeNode(e)
		n.HeadComment = comment(append([]string{k.String()}, r.EdgeNotes[k]...))
		edges.Content = append(edges.Content, n)
	}
	add(spec, "edges", edges)

	root := mapping(false)
	add(root, "apiVersion", scalar(meshpolicy.APIVersion))
	add(root, "kind", scalar(meshpolicy.Kind))
	md := mapping(true)
	add(md, "name", scalar(g.Name))
	add(root, "metadata", md)
	add(root, "spec", spec)
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}, HeadComment: comment(r.Header)}
	var foot []string
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		foot = append(foot, title)
		for _, l := range lines {
			foot = append(foot, "  "+l)
		}
	}
	section("Edges below --min-requests (comments, not edges):", r.Below)
	section("Sources without mTLS (no principal or connection_security_policy not mutual_tls; reported, not edges):", r.Plaintext)
	section("Not in the graph:", r.Unmapped)
	doc.FootComment = comment(foot)

	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	if _, err := meshpolicy.Decode("<discovered>", b.Bytes()); err != nil {
		return fmt.Errorf("the discovered graph does not validate (a bug):\n%w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func comment(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = "# " + l
	}
	return strings.Join(out, "\n")
}

func mapping(flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	if flow {
		n.Style = yaml.FlowStyle
	}
	return n
}

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, scalar(key), v)
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func intNode(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func boolNode() *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"} }

func labelsNode(l map[string]string) *yaml.Node {
	m := mapping(true)
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(m, k, scalar(l[k]))
	}
	return m
}

func settingsNode(s meshpolicy.Settings) *yaml.Node {
	m := mapping(false)
	mw := mapping(true)
	add(mw, "namespace", scalar(s.Meshwaf.Namespace))
	add(mw, "serviceAccount", scalar(s.Meshwaf.ServiceAccount))
	add(mw, "selector", labelsNode(s.Meshwaf.Selector))
	add(mw, "grpcPort", intNode(s.Meshwaf.GRPCPort))
	add(mw, "metricsPort", intNode(s.Meshwaf.MetricsPort))
	add(m, "meshwaf", mw)
	if s.Scraper != nil {
		add(m, "scraper", identityNode(*s.Scraper))
	}
	add(m, "ingressGateway", identityNode(s.IngressGateway))
	return m
}

func identityNode(id meshpolicy.Identity) *yaml.Node {
	m := mapping(true)
	if id.Principal != "" {
		add(m, "principal", scalar(id.Principal))
	} else {
		add(m, "namespace", scalar(id.Namespace))
		add(m, "serviceAccount", scalar(id.ServiceAccount))
	}
	if len(id.Selector) > 0 {
		add(m, "selector", labelsNode(id.Selector))
	}
	return m
}

func serviceNode(s meshpolicy.Service) *yaml.Node {
	m := mapping(false)
	add(m, "name", scalar(s.Name))
	add(m, "namespace", scalar(s.Namespace))
	add(m, "serviceAccount", scalar(s.ServiceAccount))
	if len(s.Selector) > 0 {
		add(m, "selector", labelsNode(s.Selector))
	}
	if len(s.Ports) > 0 {
		ports := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, p := range s.Ports {
			pm := mapping(true)
			add(pm, "port", intNode(p.Port))
			add(pm, "protocol", scalar(p.Protocol))
			if p.Metrics {
				add(pm, "metrics", boolNode())
			}
			ports.Content = append(ports.Content, pm)
		}
		add(m, "ports", ports)
	}
	if s.Ingress {
		add(m, "ingress", boolNode())
	}
	if s.Inspect {
		add(m, "inspect", boolNode())
	}
	return m
}

func edgeNode(e meshpolicy.Edge) *yaml.Node {
	m := mapping(true)
	add(m, "from", scalar(e.From))
	add(m, "to", scalar(e.To))
	if len(e.Ports) > 0 {
		ports := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, p := range e.Ports {
			ports.Content = append(ports.Content, intNode(p))
		}
		add(m, "ports", ports)
	}
	if len(e.Methods) > 0 {
		add(m, "methods", strList(e.Methods))
	}
	if len(e.Paths) > 0 {
		add(m, "paths", strList(e.Paths))
	}
	return m
}

func strList(l []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range l {
		n.Content = append(n.Content, scalar(s))
	}
	return n
}

// WriteSummary writes what an operator must look at: counts, new and
// vanished edges, sources without mTLS.
func WriteSummary(w io.Writer, r *Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "graph %s: %d services, %d edges; %d below --min-requests, %d flows without mTLS, %d not in the graph\n",
		r.Graph.Name, len(r.Graph.Services), len(r.Graph.Edges), len(r.Below), len(r.Plaintext), len(r.Unmapped))
	for _, k := range r.New {
		fmt.Fprintf(&b, "new edge: %s\n", k)
	}
	for _, k := range r.Vanished {
		fmt.Fprintf(&b, "vanished edge (kept): %s\n", k)
	}
	for _, p := range r.Plaintext {
		fmt.Fprintf(&b, "without mTLS: %s\n", p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
