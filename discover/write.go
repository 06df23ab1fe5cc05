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
// is validated before it is written: Write never writes a graph that does
// not validate.
//
// What is validated is the node tree that is rendered, without its
// comments: meshpolicy.DecodeNode, which Decode runs on the tree it parses
// from text. Comments mean nothing to it, and yaml.v3 renders each node so
// that it reads back with the same tag and value. (Parsing the text back
// took half a gigabyte for 100,000 commented edges.)
func Write(w io.Writer, r *Result) error {
	b := newNodes()
	services, edges := lists(r, b)
	if _, err := meshpolicy.DecodeNode("<discovered>", docNode(r, b, services.seq(0, services.n, false), edges.seq(0, edges.n, false))); err != nil {
		return fmt.Errorf("the discovered graph does not validate (a bug):\n%w", err)
	}
	out, err := render(r)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// list is spec.services or spec.edges: n items, node(i) each.
type list struct {
	key  string
	n    int
	node func(i int, comments bool) *yaml.Node
}

// seq is a sequence of the items from lo to hi; [] when there are none.
func (l list) seq(lo, hi int, comments bool) *yaml.Node {
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	if hi == lo {
		seq.Style = yaml.FlowStyle
	}
	for i := lo; i < hi; i++ {
		seq.Content = append(seq.Content, l.node(i, comments))
	}
	return seq
}

// lists are r's services and edges, each with its comment when comments
// is set.
func lists(r *Result, b *nodes) (services, edges list) {
	g := r.Graph
	services = list{key: "services", n: len(g.Services), node: func(i int, comments bool) *yaml.Node {
		s := g.Services[i]
		n := b.serviceNode(s)
		if comments {
			n.HeadComment = comment(append([]string{s.Ref()}, r.ServiceNotes[s.Ref()]...))
		}
		return n
	}}
	edges = list{key: "edges", n: len(g.Edges), node: func(i int, comments bool) *yaml.Node {
		e := g.Edges[i]
		n := b.edgeNode(e)
		if comments {
			k := EdgeKey{From: e.From, To: e.To}
			n.HeadComment = comment(append([]string{k.String()}, r.EdgeNotes[k]...))
		}
		return n
	}}
	return services, edges
}

// docNode is the ServiceGraph document of r with services and edges.
func docNode(r *Result, b *nodes, services, edges *yaml.Node) *yaml.Node {
	g := r.Graph
	spec := mapping(false)
	b.add(spec, "trustDomain", b.scalar(g.TrustDomain))
	b.add(spec, "settings", b.settingsNode(g.Settings))
	b.add(spec, "services", services)
	b.add(spec, "edges", edges)
	root := mapping(false)
	b.add(root, "apiVersion", b.scalar(meshpolicy.APIVersion))
	b.add(root, "kind", b.scalar(meshpolicy.Kind))
	md := mapping(true)
	b.add(md, "name", b.scalar(g.Name))
	b.add(root, "metadata", md)
	b.add(root, "spec", spec)
	return root
}

// chunk is how many services or edges one YAML encoder renders.
const chunk = 500

// render is the text yaml.v3 encodes from the commented document node of
// r, built in parts: yaml.v3's emitter keeps every event of a document
// until the document ends, which for 100,000 edges is a gigabyte. The
// frame (header, settings, footer) is encoded with services: [] and
// edges: []; the items are encoded chunk at a time as top-level sequences
// (with an indent of 2, a nested block sequence is the same text shifted
// right by 4) and spliced in. The lines replaced are unique: anything
// under spec.settings is indented deeper, and comments start with #.
func render(r *Result) ([]byte, error) {
	nb := newNodes()
	services, edges := lists(r, nb)
	empty := func() *yaml.Node { return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle} }
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{docNode(r, nb, empty(), empty())},
		HeadComment: comment(r.Header), FootComment: comment(footer(r))}
	frame, err := encode(doc)
	if err != nil {
		return nil, err
	}
	const spliced = "\n  services: []\n  edges: []\n"
	at := bytes.Index(frame, []byte(spliced))
	if at < 0 {
		return nil, fmt.Errorf("discover: unexpected frame (a bug):\n%s", frame)
	}
	var b bytes.Buffer
	b.Write(frame[:at+1])
	for _, l := range []list{services, edges} {
		if err := items(&b, l); err != nil {
			return nil, err
		}
	}
	b.Write(frame[at+len(spliced):])
	return b.Bytes(), nil
}

// items writes l under its key, chunk items per encoder.
func items(b *bytes.Buffer, l list) error {
	if l.n == 0 {
		b.WriteString("  " + l.key + ": []\n")
		return nil
	}
	b.WriteString("  " + l.key + ":\n")
	for lo := 0; lo < l.n; lo += chunk {
		out, err := encode(l.seq(lo, min(lo+chunk, l.n), true))
		if err != nil {
			return err
		}
		for line := range bytes.Lines(out) {
			if len(line) > 1 {
				b.WriteString("    ")
			}
			b.Write(line)
		}
	}
	return nil
}

func encode(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// footer lists what is reported and not in the graph.
func footer(r *Result) []string {
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
	return foot
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

// nodes builds yaml.v3 nodes, one per distinct scalar and port list:
// 100,000 edges share their keys, service references and ports. Shared
// nodes are never changed (comments go on mappings, which are not shared).
type nodes struct {
	strs  map[string]*yaml.Node
	ints  map[int]*yaml.Node
	ports map[string]*yaml.Node
}

func newNodes() *nodes {
	return &nodes{strs: map[string]*yaml.Node{}, ints: map[int]*yaml.Node{}, ports: map[string]*yaml.Node{}}
}

func mapping(flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	if flow {
		n.Style = yaml.FlowStyle
	}
	return n
}

func (b *nodes) add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, b.scalar(key), v)
}

func (b *nodes) scalar(s string) *yaml.Node {
	n := b.strs[s]
	if n == nil {
		n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
		b.strs[s] = n
	}
	return n
}

func (b *nodes) intNode(i int) *yaml.Node {
	n := b.ints[i]
	if n == nil {
		n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
		b.ints[i] = n
	}
	return n
}

func (b *nodes) boolNode() *yaml.Node { return b.scalarTagged("!!bool", "true") }

func (b *nodes) scalarTagged(tag, v string) *yaml.Node {
	n := b.strs[tag+" "+v]
	if n == nil {
		n = &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v}
		b.strs[tag+" "+v] = n
	}
	return n
}

func (b *nodes) labelsNode(l map[string]string) *yaml.Node {
	m := mapping(true)
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.add(m, k, b.scalar(l[k]))
	}
	return m
}

func (b *nodes) settingsNode(s meshpolicy.Settings) *yaml.Node {
	m := mapping(false)
	mw := mapping(true)
	b.add(mw, "namespace", b.scalar(s.Meshwaf.Namespace))
	b.add(mw, "serviceAccount", b.scalar(s.Meshwaf.ServiceAccount))
	b.add(mw, "selector", b.labelsNode(s.Meshwaf.Selector))
	b.add(mw, "grpcPort", b.intNode(s.Meshwaf.GRPCPort))
	b.add(mw, "metricsPort", b.intNode(s.Meshwaf.MetricsPort))
	b.add(m, "meshwaf", mw)
	if s.Scraper != nil {
		b.add(m, "scraper", b.identityNode(*s.Scraper))
	}
	b.add(m, "ingressGateway", b.identityNode(s.IngressGateway))
	return m
}

func (b *nodes) identityNode(id meshpolicy.Identity) *yaml.Node {
	m := mapping(true)
	if id.Principal != "" {
		b.add(m, "principal", b.scalar(id.Principal))
	} else {
		b.add(m, "namespace", b.scalar(id.Namespace))
		b.add(m, "serviceAccount", b.scalar(id.ServiceAccount))
	}
	if len(id.Selector) > 0 {
		b.add(m, "selector", b.labelsNode(id.Selector))
	}
	return m
}

func (b *nodes) serviceNode(s meshpolicy.Service) *yaml.Node {
	m := mapping(false)
	b.add(m, "name", b.scalar(s.Name))
	b.add(m, "namespace", b.scalar(s.Namespace))
	b.add(m, "serviceAccount", b.scalar(s.ServiceAccount))
	if len(s.Selector) > 0 {
		b.add(m, "selector", b.labelsNode(s.Selector))
	}
	if len(s.Ports) > 0 {
		ports := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, p := range s.Ports {
			pm := mapping(true)
			b.add(pm, "port", b.intNode(p.Port))
			b.add(pm, "protocol", b.scalar(p.Protocol))
			if p.Metrics {
				b.add(pm, "metrics", b.boolNode())
			}
			ports.Content = append(ports.Content, pm)
		}
		b.add(m, "ports", ports)
	}
	if s.Ingress {
		b.add(m, "ingress", b.boolNode())
	}
	if s.Inspect {
		b.add(m, "inspect", b.boolNode())
	}
	return m
}

func (b *nodes) edgeNode(e meshpolicy.Edge) *yaml.Node {
	m := mapping(true)
	b.add(m, "from", b.scalar(e.From))
	b.add(m, "to", b.scalar(e.To))
	if len(e.Ports) > 0 {
		b.add(m, "ports", b.portList(e.Ports))
	}
	if len(e.Methods) > 0 {
		b.add(m, "methods", b.strList(e.Methods))
	}
	if len(e.Paths) > 0 {
		b.add(m, "paths", b.strList(e.Paths))
	}
	return m
}

func (b *nodes) portList(ports []int) *yaml.Node {
	key := fmt.Sprint(ports)
	n := b.ports[key]
	if n == nil {
		n = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, p := range ports {
			n.Content = append(n.Content, b.intNode(p))
		}
		b.ports[key] = n
	}
	return n
}

func (b *nodes) strList(l []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range l {
		n.Content = append(n.Content, b.scalar(s))
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
