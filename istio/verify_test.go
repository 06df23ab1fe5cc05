package istio

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// cells renders a reachability as one row per "dest:port", one character
// per source: A allowed for every request, p allowed for some requests,
// ~ conditional, . denied.
func cells(plan *meshpolicy.Plan, r *meshpolicy.Reachability) map[string]string {
	out := map[string]string{}
	for i, d := range plan.Destinations {
		for j, dp := range d.Ports {
			k := plan.DestPortIndex(i, j)
			var b strings.Builder
			for s := range plan.Sources {
				switch {
				case r.Conditional[k].Has(s):
					b.WriteByte('~')
				case r.Allowed[k].Has(s) && r.Partial[k].Has(s):
					b.WriteByte('p')
				case r.Allowed[k].Has(s):
					b.WriteByte('A')
				default:
					b.WriteByte('.')
				}
			}
			out[d.ID+":"+strconv.Itoa(dp.Port)] = b.String()
		}
	}
	return out
}

func policiesFrom(t *testing.T, yaml string) []Policy {
	t.Helper()
	set := &PolicySet{}
	require.NoError(t, set.AddDocuments("test.yaml", []byte(yaml)))
	return set.Policies
}

func TestEvaluate(t *testing.T) {
	plan := loadPlan(t, filepath.Join("testdata", "graphs", "eval.yaml"))
	// sources: default/a default/b default/c other/d ingress-gateway
	var ids []string
	for _, s := range plan.Sources {
		ids = append(ids, s.ID)
	}
	require.Equal(t, []string{"default/a", "default/b", "default/c", "other/d", "ingress-gateway"}, ids)
	const open = "AAAAA"
	tests := []struct {
		name     string
		root     string
		policies string
		want     map[string]string // rows not named are open
		notes    []string
	}{
		{name: "no policies: everything allowed"},
		{name: "allow-nothing makes the namespace default-deny", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
`, want: map[string]string{"default/a:8080": ".....", "default/b:8080": ".....", "default/c:5432": ".....", "default/c:8080": "....."}},
		{name: "rules [{}] allows everything, and still makes the workload ALLOW-only", policies: `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec: {selector: {matchLabels: {app: a}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-b, namespace: default}
spec: {selector: {matchLabels: {app: a}}, action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/b]}}]}]}
`, want: map[string]string{"default/a:8080": "A.AAA"}},
		{name: "ALLOW by principal on one workload", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/a]}}], to: [{operation: {ports: ["8080"]}}]}]
`, want: map[string]string{"default/b:8080": "A...."}},
		{name: "root-namespace DENY applies mesh-wide", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-other, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [other]}}]}]}
`, want: map[string]string{"default/a:8080": "AAA.A", "default/b:8080": "AAA.A", "default/c:5432": "AAA.A", "default/c:8080": "AAA.A", "other/d:8080": "AAA.A"}},
		{name: "configured root namespace", root: "mesh-root", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-other, namespace: mesh-root}
spec: {selector: {matchLabels: {app: d}}, action: DENY, rules: [{from: [{source: {notNamespaces: [other]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-root-any-more, namespace: istio-system}
spec: {}
`, want: map[string]string{"other/d:8080": "...A."}},
		{name: "a policy in another namespace does not apply", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: other}
spec: {selector: {matchLabels: {app: a}}}
`},
		{name: "notPrincipals", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c, namespace: default}
spec:
  selector: {matchLabels: {app: c}}
  rules: [{from: [{source: {notPrincipals: [cluster.local/ns/default/sa/a]}}]}]
`, want: map[string]string{"default/c:5432": ".AAAA", "default/c:8080": ".AAAA"}},
		{name: "notPorts", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c, namespace: default}
spec:
  selector: {matchLabels: {tier: data}}
  rules: [{to: [{operation: {notPorts: ["5432"]}}]}]
`, want: map[string]string{"default/c:5432": "....."}},
		{name: "namespaces and serviceAccounts", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: other}
spec:
  rules:
  - from: [{source: {namespaces: [default]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {serviceAccounts: [default/b, other/d]}}]}]
`, want: map[string]string{"other/d:8080": "AAA..", "default/a:8080": ".A.A."}},
		{name: "selector that matches no workload changes nothing", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: none, namespace: default}
spec: {selector: {matchLabels: {app: c, tier: web}}}
`},
		{name: "CUSTOM does not decide allow", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waf, namespace: istio-system}
spec: {action: CUSTOM, provider: {name: meshwaf}, rules: [{}]}
`, notes: []string{"test.yaml:2: istio-system/waf: CUSTOM delegates to an external authorizer, which neither allows nor denies a flow here: ignored"}},
		{name: "dry-run and AUDIT are not enforced", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default, annotations: {istio.io/dry-run: "true"}}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec: {action: AUDIT, rules: [{}]}
`, notes: []string{
			"test.yaml:2: default/allow-nothing: dry-run (istio.io/dry-run), not enforced: ignored",
			"test.yaml:7: default/audit: AUDIT only logs: ignored",
		}},
		{name: "targetRefs attach to gateways, not sidecars", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: default}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
`, notes: []string{"test.yaml:2: default/gw: targetRefs attach it to gateways or waypoints, not sidecars: ignored"}},
		{name: "principal wildcards", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/other/*", "*/sa/b"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  rules: [{from: [{source: {principals: ["*"]}}]}]
`, want: map[string]string{"default/a:8080": ".A.A.", "default/b:8080": open}},
		{name: "when on source.namespace and destination.port", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  rules: [{when: [{key: source.namespace, values: [other]}, {key: destination.port, notValues: ["5432"]}]}]
`, want: map[string]string{"default/a:8080": "...A.", "default/b:8080": "...A.", "default/c:8080": "...A.", "default/c:5432": "....."}},
		{name: "unsupported conditions make flows conditional", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/b]}}]
    when: [{key: "request.headers[x-team]", values: [shop]}]
  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]
`, want: map[string]string{"default/a:8080": "~~~~~"},
			notes: []string{"test.yaml:2: default/a: ipBlocks, when request.headers[x-team] cannot be evaluated: flows they decide are conditional"}},
		{name: "methods: partial on HTTP ports, never on TCP ports", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c, namespace: default}
spec:
  selector: {matchLabels: {app: c}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
`, want: map[string]string{"default/c:8080": "ppppp", "default/c:5432": "....."}},
		{name: "DENY with methods: conditional on HTTP, whole port on TCP", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c, namespace: default}
spec:
  selector: {matchLabels: {app: c}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/a]}}], to: [{operation: {methods: [DELETE]}}]}]
`, want: map[string]string{"default/c:8080": "~AAAA", "default/c:5432": ".AAAA"}},
		{name: "a policy without namespace is in default", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {selector: {matchLabels: {app: b}}}
`, want: map[string]string{"default/b:8080": "....."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes := Evaluate(plan, policiesFrom(t, tt.policies), EvalOptions{RootNamespace: tt.root})
			want := map[string]string{}
			for row := range cells(plan, got) {
				want[row] = open
			}
			for row, v := range tt.want {
				_, ok := want[row]
				require.True(t, ok, "no row %s", row)
				want[row] = v
			}
			require.Equal(t, want, cells(plan, got))
			require.Equal(t, tt.notes, notes)
		})
	}
}

func TestMatchString(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		{"*", "x", true}, {"*", "", false},
		{"cluster.local/ns/a/*", "cluster.local/ns/a/sa/b", true},
		{"cluster.local/ns/a/*", "cluster.local/ns/ab/sa/b", false},
		{"*/sa/b", "cluster.local/ns/a/sa/b", true},
		{"*/sa/b", "cluster.local/ns/a/sa/bb", false},
		{"exact", "exact", true}, {"exact", "exactly", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, matchString(tt.pattern, tt.value), "%q ~ %q", tt.pattern, tt.value)
	}
}

func TestLoadPolicies(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	write("a.yaml", `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: one, namespace: shop}
  spec: {}
`)
	write("sub/b.yml", "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: two, namespace: shop}\nspec: {action: DENY}\n")
	write("notes.txt", "not yaml: [")
	set, err := LoadPolicies(dir)
	require.NoError(t, err)
	require.Len(t, set.Policies, 2)
	require.Equal(t, "one", set.Policies[0].Object.Name)
	require.Equal(t, filepath.Join(dir, "a.yaml")+":9", set.Policies[0].Origin)
	require.Equal(t, "two", set.Policies[1].Object.Name)
	require.Equal(t, []string{filepath.Join(dir, "a.yaml") + ":2: ignored v1 Namespace shop (not an AuthorizationPolicy)"}, set.Notes)

	bad := write("bad/typo.yaml", `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: shop}
spec:
  rules: [{from: [{source: {notPrincipal: [x]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ports, namespace: shop}
spec:
  rules: [{to: [{operation: {ports: [8080]}}]}]
`)
	_, err = LoadPolicies(bad)
	require.ErrorContains(t, err, bad+`:2: AuthorizationPolicy shop/typo: spec: `)
	require.ErrorContains(t, err, `unknown field "notPrincipal"`)
	require.ErrorContains(t, err, bad+`:8: AuthorizationPolicy shop/ports: spec: `)
	_, err = LoadPolicies(filepath.Join(dir, "missing.yaml"))
	require.Error(t, err)
	_, err = LoadPolicies(write("empty/x.txt", ""))
	require.NoError(t, err, "a file named explicitly is read whatever its extension")
	_, err = LoadPolicies(filepath.Join(dir, "empty"))
	require.ErrorContains(t, err, "no .yaml, .yml or .json files")
}

// Istio reads some principals and service accounts relative to the mesh:
// "cluster.local" as the trust domain of a five-part principal names the
// mesh's own trust domain (the graph's), and a service account without a
// namespace is in the policy's namespace. Both were compared literally, so
// verify missed flows Istio allows (test/istio checks the same against
// Istio's generated RBAC).
func TestEvaluateNamesRelativeToTheMesh(t *testing.T) {
	g, err := meshpolicy.Decode("td.yaml", []byte(`
apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: td}
spec:
  trustDomain: example.org
  settings:
    scraper: {principal: partner.example/ns/monitoring/sa/prometheus}
  services:
  - {name: a, ports: [{port: 8080, protocol: HTTP}]}
  - {name: b, ports: [{port: 8080, protocol: HTTP}]}
  - {name: d, namespace: other, ports: [{port: 8080, protocol: HTTP}]}
`))
	require.NoError(t, err)
	plan := meshpolicy.NewPlan(g)
	// sources: default/a default/b other/d ingress-gateway scraper
	tests := []struct {
		name, policies string
		want           map[string]string
	}{
		{name: "cluster.local in a principal is the graph's trust domain", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/b]}}]}]
`, want: map[string]string{"default/a:8080": ".A..."}},
		{name: "another trust domain is literal", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {principals: [cluster.local/ns/monitoring/sa/prometheus]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  rules: [{from: [{source: {principals: [partner.example/ns/monitoring/sa/prometheus]}}]}]
`, want: map[string]string{"default/a:8080": ".....", "default/b:8080": "....A"}},
		{name: "in notPrincipals and when source.principal too", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  action: DENY
  rules: [{from: [{source: {notPrincipals: ["cluster.local/ns/default/sa/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b, namespace: default}
spec:
  selector: {matchLabels: {app: b}}
  rules: [{when: [{key: source.principal, values: [cluster.local/ns/other/sa/d]}]}]
`, want: map[string]string{"default/a:8080": "AA...", "default/b:8080": "..A.."}},
		{name: "a principal of other than five parts is literal", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/*"]}}]}]
`, want: map[string]string{"default/a:8080": "....."}},
		{name: "a service account without namespace is in the policy's namespace", policies: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  selector: {matchLabels: {app: a}}
  rules: [{from: [{source: {serviceAccounts: [b, d]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: other}
spec:
  selector: {matchLabels: {app: d}}
  action: DENY
  rules: [{from: [{source: {notServiceAccounts: [d]}}]}]
`, want: map[string]string{"default/a:8080": ".A...", "other/d:8080": "..A.."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes := Evaluate(plan, policiesFrom(t, tt.policies), EvalOptions{})
			require.Empty(t, notes)
			want := map[string]string{}
			for row := range cells(plan, got) {
				want[row] = "AAAAA"
			}
			for row, v := range tt.want {
				want[row] = v
			}
			require.Equal(t, want, cells(plan, got))
		})
	}
}
