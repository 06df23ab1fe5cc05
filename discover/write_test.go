package discover

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// renderTree is the reference render: the whole document as one yaml.v3
// node tree, encoded at once.
func renderTree(t *testing.T, r *Result) []byte {
	t.Helper()
	b := newNodes()
	services, edges := lists(r, b)
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{docNode(r, b, services.seq(0, services.n, true), edges.seq(0, edges.n, true))},
		HeadComment: comment(r.Header), FootComment: comment(footer(r))}
	out, err := encode(doc)
	require.NoError(t, err)
	return out
}

// TestRenderEqualsTree: render, which encodes services and edges in
// chunks, writes the same bytes as encoding the whole tree at once.
func TestRenderEqualsTree(t *testing.T) {
	demo := func() *Result {
		flows := []Flow{flow("www", "auth", true, 1200), flow("www", "db", true, 900), flow("batch", "db", true, 3), flow("legacy", "db", false, 50)}
		return Build(demoInventory(), flows, testOptions()).Graph(nil, "")
	}
	base, err := meshpolicy.Decode("hand.yaml", []byte(`apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: "true"}
spec:
  services:
  - {name: www, ports: [{port: 8080, protocol: HTTP}]}
  - {name: auth, ports: [{port: 8080, protocol: HTTP}, {port: 9090, protocol: HTTP, metrics: true}]}
  edges:
  - {from: www, to: auth, methods: [GET, POST], paths: ["/x,y", "/a:b", "*", "/q#f", "/it's", "*.css"]}
`))
	require.NoError(t, err)
	odd := []string{"true", "123", "a: b", "-x", "", "null", "x #y", "two\nlines", "ünïcode", "'q'", `"d"`, "[x]", "{y}", "~", "yes", "1e3", " lead", "trail "}
	oddGraph := &meshpolicy.Graph{Name: "odd", TrustDomain: "td: x"}
	oddGraph.Settings.IngressGateway = meshpolicy.Identity{Principal: "spiffe://x/y z"}
	oddGraph.Settings.Meshwaf = meshpolicy.Meshwaf{Namespace: "null", ServiceAccount: "yes", Selector: map[string]string{"a: b": "#c"}}
	for i, s := range odd {
		oddGraph.Services = append(oddGraph.Services, meshpolicy.Service{Name: s, Namespace: odd[(i+1)%len(odd)], ServiceAccount: s,
			Selector: map[string]string{s + "k": s}, Ports: []meshpolicy.Port{{Port: i, Protocol: s}}, Ingress: i%2 == 0, Inspect: i%3 == 0})
		oddGraph.Edges = append(oddGraph.Edges, meshpolicy.Edge{From: s, To: odd[(i+2)%len(odd)], Ports: []int{i}, Methods: []string{s}, Paths: []string{s, "/" + s}})
	}
	big := func(services, per int) *Result {
		g := &meshpolicy.Graph{Name: "big", TrustDomain: "cluster.local"}
		r := &Result{Graph: g, ServiceNotes: map[string][]string{}, EdgeNotes: map[EdgeKey][]string{}, Header: []string{"big"}}
		for i := range services {
			s := meshpolicy.Service{Name: fmt.Sprintf("svc-%05d", i), Namespace: "ns", ServiceAccount: "sa", Ports: []meshpolicy.Port{{Port: 8080, Protocol: "HTTP"}}}
			g.Services = append(g.Services, s)
			r.ServiceNotes[s.Ref()] = []string{"note"}
			for j := range per {
				e := meshpolicy.Edge{From: s.Ref(), To: fmt.Sprintf("ns/svc-%05d", (i+j+1)%services), Ports: []int{8080}}
				g.Edges = append(g.Edges, e)
				r.EdgeNotes[EdgeKey{e.From, e.To}] = []string{"observed", "ports"}
			}
		}
		return r
	}
	tests := []struct {
		name string
		r    *Result
	}{
		{"demo", demo()},
		{"merge", Build(demoInventory(), []Flow{flow("www", "db", true, 100)}, testOptions()).Graph(base, "hand.yaml")},
		{"empty", Build(&Inventory{}, nil, testOptions()).Graph(nil, "")},
		{"no edges", Build(demoInventory(), nil, testOptions()).Graph(nil, "")},
		{"odd strings", &Result{Graph: oddGraph, Header: odd, Below: odd, Plaintext: []string{"p"}, Unmapped: odd,
			ServiceNotes: map[string][]string{"": odd}, EdgeNotes: map[EdgeKey][]string{{"true", "a: b"}: odd}}},
		{"chunks", big(2*chunk+17, 3)},
		{"one chunk exactly", big(chunk, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render(tt.r)
			require.NoError(t, err)
			require.Equal(t, string(renderTree(t, tt.r)), string(got))
		})
	}
}
