package meshpolicy

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustLoad(t *testing.T, path string) *Graph {
	t.Helper()
	g, err := Load(path)
	require.NoError(t, err)
	return g
}

// grantsOf maps "dest:port" to "principal methods paths why" strings.
func grantsOf(p *Plan) map[string][]string {
	out := map[string][]string{}
	for _, d := range p.Destinations {
		for _, dp := range d.Ports {
			key := d.ID + ":" + strconv.Itoa(dp.Port)
			for _, g := range dp.Grants {
				s := g.Principal + " " + g.Why
				if g.Narrowed() {
					s += " " + joinList(g.Methods) + "." + joinList(g.Paths)
				}
				out[key] = append(out[key], s)
			}
		}
	}
	return out
}

func joinList(l []string) string {
	var b bytes.Buffer
	for i, s := range l {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(s)
	}
	return b.String()
}

func TestNewPlanFull(t *testing.T) {
	p := NewPlan(mustLoad(t, filepath.Join("testdata", "valid-full.yaml")))
	require.Equal(t, []string{"back", "front"}, p.Namespaces)
	var ids []string
	for _, s := range p.Sources {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{"back/api", "back/batch", "back/db", "front/web", IngressGatewayID, ScraperID}, ids)
	require.Equal(t, map[string][]string{
		"back/api:5000":    {"example.org/ns/front/sa/web edge"},
		"back/api:8443":    {"example.org/ns/front/sa/web edge GET,POST./v1/*"},
		"back/db:5432":     {"example.org/ns/back/sa/api-sa edge", "example.org/ns/back/sa/batch edge"},
		"front/web:8080":   {"example.org/ns/gw/sa/gateway ingress"},
		"front/web:9102":   {"example.org/ns/monitoring/sa/prometheus metrics"},
		"waf/meshwaf:9001": {"example.org/ns/back/sa/api-sa ext_authz", "example.org/ns/front/sa/web ext_authz"},
		"waf/meshwaf:9091": {"example.org/ns/monitoring/sa/prometheus metrics"},
	}, grantsOf(p))
	last := p.Destinations[len(p.Destinations)-1]
	require.Equal(t, KindMeshwaf, last.Kind)
	require.Equal(t, "meshwaf-ext-authz-callers", last.PolicyName)
	require.Contains(t, last.Reason, "back/api, front/web")
	require.Contains(t, last.Reason, "scraper example.org/ns/monitoring/sa/prometheus may reach its metrics port 9091")
	require.Equal(t, map[string]string{"app.kubernetes.io/name": "meshwaf"}, last.Labels)
	require.Len(t, p.Notes, 2)
	require.Contains(t, p.Notes[0], "added waf/meshwaf-ext-authz-callers")
	require.Contains(t, p.Notes[1], "front/web:9102")
}

func TestSharedPrincipalIsNoted(t *testing.T) {
	g, err := Decode("g.yaml", []byte(`apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: g}
spec:
  services:
  - {name: a, serviceAccount: default}
  - {name: b, serviceAccount: default}
  - {name: c, ports: [{port: 80}]}
  edges: [{from: a, to: c}]
`))
	require.NoError(t, err)
	p := NewPlan(g)
	require.Equal(t, []string{"warning: default/a, default/b share the principal cluster.local/ns/default/sa/default; policies cannot tell them apart, so each may make the calls any of them may"}, p.Notes)
	want := p.Expected()
	c := 2 // default/c
	k := p.DestPortIndex(c, 0)
	require.True(t, want.Allowed[k].Has(0) && want.Allowed[k].Has(1), "b shares a's principal")
	require.False(t, want.Allowed[k].Has(2))
}

func TestCompare(t *testing.T) {
	p := NewPlan(mustLoad(t, filepath.Join("testdata", "valid-full.yaml")))
	want := p.Expected()
	require.False(t, p.Compare(want, want).Mismatch(true))

	got := p.Expected()
	api, db := 0, 2
	k8443 := p.DestPortIndex(api, 1) // api ports sorted: 5000, 8443
	require.Equal(t, 8443, p.Destinations[api].Ports[1].Port)
	web := 3
	require.True(t, want.Partial[k8443].Has(web), "web->api:8443 is narrowed")
	got.Partial[k8443].Clear() // now allowed for every request
	kdb := p.DestPortIndex(db, 0)
	got.Allowed[kdb].Set(web)                  // extra web->db
	got.Allowed[kdb].AndNot(want.Allowed[kdb]) // missing api->db, batch->db
	got.Allowed[kdb].Set(web)
	got.Conditional[p.DestPortIndex(api, 0)].Set(web)
	got.Allowed[p.DestPortIndex(api, 0)].AndNot(got.Conditional[p.DestPortIndex(api, 0)])
	d := p.Compare(want, got)
	require.Equal(t, []Flow{{"back/api", "back/db", 5432}, {"back/batch", "back/db", 5432}}, d.Missing)
	require.Equal(t, []Flow{{"front/web", "back/db", 5432}}, d.Extra)
	require.Equal(t, []Flow{{"front/web", "back/api", 8443}}, d.Broader)
	require.Empty(t, d.Narrower)
	require.Equal(t, []Flow{{"front/web", "back/api", 5000}}, d.Conditional)
	require.Equal(t, []bool{true}, d.Planned)
	require.True(t, d.Mismatch(false))

	var out bytes.Buffer
	require.NoError(t, d.WriteDiff(&out, false))
	require.Contains(t, out.String(), "missing: planned but denied (2):\n  back/api -> back/db:5432\n  back/batch -> back/db:5432\n")
	require.Contains(t, out.String(), "extra: allowed but not planned (1):\n  front/web -> back/db:5432\n")
	require.Contains(t, out.String(), "front/web -> back/api:5000 (planned)")
	require.Contains(t, out.String(), "MISMATCH: 2 missing, 1 extra, 1 broader, 1 conditional\n")

	out.Reset()
	require.NoError(t, p.WriteMatrix(&out, want, got))
	require.Contains(t, out.String(), "  [4] front/web\n")
	require.Contains(t, out.String(), "back/db:5432       - - . + . .\n")
	require.Contains(t, out.String(), "back/api:8443      . . . * . .\n")
	require.Contains(t, out.String(), "back/api:5000      . . . ~ . .\n")
}

func TestConditionalOnlyIsNotAMismatchUnlessStrict(t *testing.T) {
	d := Diff{Conditional: []Flow{{"a", "b", 1}}, Planned: []bool{false}}
	require.False(t, d.Mismatch(false))
	require.True(t, d.Mismatch(true))
	var out bytes.Buffer
	require.NoError(t, d.WriteDiff(&out, false))
	require.Contains(t, out.String(), "OK except 1 conditional flows")
}

func TestBits(t *testing.T) {
	b := NewBits(130)
	require.True(t, b.Empty())
	b.Fill(130)
	require.Equal(t, 130, b.Count())
	o := NewBits(130)
	o.Set(0)
	o.Set(64)
	o.Set(129)
	b.AndNot(o)
	require.Equal(t, 127, b.Count())
	require.False(t, b.Has(64))
	c := o.Clone()
	c.And(b)
	require.True(t, c.Empty())
	var got []int
	o.Each(func(i int) { got = append(got, i) })
	require.Equal(t, []int{0, 64, 129}, got)
	b.Or(o)
	require.Equal(t, 130, b.Count())
	b.Clear()
	require.True(t, b.Empty())
}

func TestOverlappingSelectorsAreNoted(t *testing.T) {
	g, err := Decode("g.yaml", []byte(`apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: g}
spec:
  services:
  - {name: web, selector: {app: web}}
  - {name: web-canary, selector: {app: web, track: canary}}
  - {name: other, namespace: x, selector: {app: web}}
`))
	require.NoError(t, err)
	require.Equal(t, []string{"warning: the selector of default/web also selects the pods of default/web-canary: the policy of default/web applies to both"}, NewPlan(g).Notes)
}

// commaGraph has three callers sharing one principal: a allowed the one
// path "/a,/b", b the two paths "/a" and "/b", d the prefix "/a*". Joined
// with commas, a's and b's lists read alike, and d's sorts before both.
const commaGraph = `apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: g}
spec:
  services:
  - {name: a, serviceAccount: shared}
  - {name: b, serviceAccount: shared}
  - {name: c, ports: [{port: 80, protocol: HTTP}]}
  - {name: d, serviceAccount: shared}
  edges:
  - {from: a, to: c, paths: ["/a,/b"]}
  - {from: b, to: c, paths: ["/a", "/b"]}
  - {from: d, to: c, paths: ["/a*"]}
`

// Grants carry their methods and paths as the lists the graph gave: a
// path holding a comma stays one path, lists that read alike once joined
// stay apart, and grants sort list by list, element by element.
func TestPlanKeepsListsApart(t *testing.T) {
	g, err := Decode("g.yaml", []byte(commaGraph))
	require.NoError(t, err)
	p := NewPlan(g)
	c := p.Destinations[2]
	require.Equal(t, "default/c", c.ID)
	const pr = "cluster.local/ns/default/sa/shared"
	require.Equal(t, []Grant{
		{Principal: pr, Sources: []string{"default/b"}, Paths: []string{"/a", "/b"}, Why: WhyEdge},
		{Principal: pr, Sources: []string{"default/d"}, Paths: []string{"/a*"}, Why: WhyEdge},
		{Principal: pr, Sources: []string{"default/a"}, Paths: []string{"/a,/b"}, Why: WhyEdge},
	}, c.Ports[0].Grants)
	for range 20 {
		require.Equal(t, c.Ports[0].Grants, NewPlan(g).Destinations[2].Ports[0].Grants, "deterministic")
	}
}
