package meshpolicy

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/internal/fielderr"
)

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string // every error, in order: "line:column: field: message prefix"
	}{
		{"unknown-key.yaml", []string{
			"7:5: spec.services[0].port: unknown key (known: name, namespace, serviceAccount, selector, ports, ingress, inspect, waypoint)",
			"8:3: spec.edgez: unknown key",
		}},
		{"unknown-service.yaml", []string{
			`8:21: spec.edges[0].to: unknown service "auht"`,
			`9:12: spec.edges[1].from: unknown service "shop/www"`,
		}},
		{"undeclared-port.yaml", []string{
			"9:39: spec.edges[0].ports[1]: port 3306 is not declared on default/db (declared: 5432)",
		}},
		{"duplicates.yaml", []string{
			"6:46: spec.services[0].ports[1].port: duplicate port 8080 (first on line 6)",
			"8:12: spec.services[2].name: duplicate service default/www (first on line 6)",
			"11:21: spec.edges[1].to: duplicate edge default/www -> default/db port 5432 (first on line 10)",
			"12:33: spec.edges[2].ports[0]: duplicate edge default/www -> default/db port 5432 (first on line 10)",
			"12:39: spec.edges[2].ports[1]: duplicate port 5432",
		}},
		{"invalid-names.yaml", []string{
			`3:18: metadata.name: invalid name "Shop_1": a lowercase RFC 1123 subdomain`,
			`5:16: spec.trustDomain: invalid trust domain "cluster local"`,
			`7:11: spec.services[0].name: invalid service name "Www": a lowercase RFC 1123 label`,
			`8:16: spec.services[0].namespace: invalid namespace "my_ns"`,
			`9:21: spec.services[0].serviceAccount: invalid service account "sa with spaces"`,
			`11:16: spec.services[1].selector[bad key!]: invalid label key "bad key!"`,
			`11:37: spec.services[1].selector[app]: invalid label value "-bad-value"`,
		}},
		{"ambiguous-ref.yaml", []string{
			`10:21: spec.edges[0].to: ambiguous reference "auth" matches default/auth, shop/auth: write namespace/name`,
		}},
		{"wrong-types.yaml", []string{
			`7:20: spec.services[0].ports[0].port: want an integer, got string "8080"`,
			`7:38: spec.services[0].ports[0].protocol: "http" is not one of HTTP, HTTP2, GRPC, TCP, TLS`,
			"7:52: spec.services[0].ports[1].port: port 70000 is not between 1 and 65535",
			`8:14: spec.services[0].ingress: want true or false, got string "yes"`,
			"9:25: spec.services[0].selector[version]: want a string, got int 1",
			"10:11: spec.services[1].name: want a string, got a list",
			"11:10: spec.edges: want a list, got a mapping",
		}},
		{"bad-header.yaml", []string{
			`1:13: apiVersion: "meshwaf.io/v1" is not meshwaf.io/v1alpha1`,
			`2:7: kind: "Graph" is not ServiceGraph`,
			"3:11: metadata.name: missing",
			"5:13: spec.services: want at least one service",
		}},
		{"l7-narrowing.yaml", []string{
			"9:33: spec.edges[0].ports[0]: port 5432 of default/db is TCP: methods and paths need HTTP, HTTP2 or GRPC",
			`10:50: spec.edges[1].methods[0]: invalid HTTP method "get"`,
			`10:60: spec.edges[1].methods[2]: duplicate method "GET"`,
			`10:74: spec.edges[1].paths[0]: invalid path "/a/*/b"`,
			`10:91: spec.edges[1].paths[2]: invalid path "no-slash"`,
		}},
		{"bad-identities.yaml", []string{
			"6:44: spec.settings.meshwaf.metricsPort: must differ from grpcPort 9000",
			"7:14: spec.settings.scraper: set principal, or both namespace and serviceAccount",
			"8:33: spec.settings.ingressGateway.principal: drop the spiffe:// prefix",
		}},
		{"cluster-local-principal.yaml", []string{
			"7:26: spec.settings.scraper.principal: trust domain cluster.local: Istio reads it in a policy as the mesh's own trust domain example.org, so the policy would admit example.org/ns/monitoring/sa/prometheus instead",
		}},
		{"invalid-yaml.yaml", []string{"4: invalid YAML: did not find expected ',' or '}'"}},
		{"two-documents.yaml", []string{"6:1: more than one YAML document: want one ServiceGraph"}},
		{"empty.yaml", []string{"empty file: want a ServiceGraph document"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			g, err := Load(path)
			require.Nil(t, g)
			var list ErrorList
			require.True(t, errors.As(err, &list), "want an ErrorList, got %T: %v", err, err)
			require.Len(t, list, len(tt.want), "errors:\n%v", err)
			for i, w := range tt.want {
				got := list[i].Error()
				require.True(t, strings.HasPrefix(got, path+":"+w) || (list[i].Line == 0 && got == path+": "+w),
					"error %d:\n got %s\nwant %s:%s", i, got, path, w)
				require.Equal(t, path, list[i].File)
			}
			var one *fielderr.Error
			require.True(t, errors.As(err, &one), "errors.As finds each *fielderr.Error")
		})
	}
}

// The field path of an error is data: segments, not text to parse back.
func TestErrorPathIsData(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "l7-narrowing.yaml"))
	var list ErrorList
	require.ErrorAs(t, err, &list)
	require.Equal(t, fielderr.At("spec", "edges").Index(1).Field("methods").Index(0), list[1].Path)
	require.Equal(t, `invalid HTTP method "get": want upper-case letters, e.g. GET`, list[1].Err.Error())
}

func TestLoadValidFull(t *testing.T) {
	g, err := Load(filepath.Join("testdata", "valid-full.yaml"))
	require.NoError(t, err)
	require.Equal(t, "full", g.Name)
	require.Equal(t, "example.org", g.TrustDomain)
	require.Equal(t, Meshwaf{Namespace: "waf", ServiceAccount: "waf-sa", Selector: map[string]string{"app.kubernetes.io/name": "meshwaf"},
		GRPCPort: 9001, MetricsPort: 9091}, g.Settings.Meshwaf)
	require.Equal(t, &Identity{Namespace: "monitoring", ServiceAccount: "prometheus", Selector: map[string]string{"app": "prometheus"}}, g.Settings.Scraper)
	require.Equal(t, "example.org/ns/gw/sa/gateway", g.Settings.IngressGateway.PrincipalIn(g.TrustDomain))
	require.Equal(t, "gw", g.Settings.IngressGateway.Namespace, "namespace parsed from the principal")
	require.Equal(t, []Service{
		{Name: "web", Namespace: "front", ServiceAccount: "web", Selector: map[string]string{"app": "web"},
			Ports: []Port{{8080, "HTTP", false}, {9102, "HTTP", true}}, Ingress: true, Inspect: true},
		{Name: "api", Namespace: "back", ServiceAccount: "api-sa", Selector: map[string]string{"app": "api", "tier": "backend"},
			Ports: []Port{{8443, "HTTP2", false}, {5000, "GRPC", false}}, Inspect: true},
		{Name: "db", Namespace: "back", ServiceAccount: "db", Selector: map[string]string{"app": "db"}, Ports: []Port{{5432, "TCP", false}}},
		{Name: "batch", Namespace: "back", ServiceAccount: "batch", Selector: map[string]string{"app": "batch"}},
	}, g.Services)
	require.Equal(t, []Edge{
		{From: "front/web", To: "back/api", Ports: []int{8443}, Methods: []string{"GET", "POST"}, Paths: []string{"/v1/*"}},
		{From: "front/web", To: "back/api", Ports: []int{5000}},
		{From: "back/api", To: "back/db", Ports: []int{5432}},
		{From: "back/batch", To: "back/db", Ports: []int{5432}},
	}, g.Edges)
}

func TestLoadDefaults(t *testing.T) {
	g, err := Decode("g.yaml", []byte("apiVersion: meshwaf.io/v1alpha1\nkind: ServiceGraph\nmetadata: {name: g}\nspec:\n  services: [{name: a}]\n"))
	require.NoError(t, err)
	require.Equal(t, DefaultTrustDomain, g.TrustDomain)
	require.Equal(t, Meshwaf{Namespace: "meshwaf-system", ServiceAccount: "meshwaf", Selector: map[string]string{"app": "meshwaf"},
		GRPCPort: 9000, MetricsPort: 9090}, g.Settings.Meshwaf)
	require.Nil(t, g.Settings.Scraper)
	require.Equal(t, "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account", g.Settings.IngressGateway.PrincipalIn(g.TrustDomain))
	require.Equal(t, Service{Name: "a", Namespace: "default", ServiceAccount: "a", Selector: map[string]string{"app": "a"}}, g.Services[0])
}

func TestParsePrincipal(t *testing.T) {
	tests := []struct {
		in         string
		td, ns, sa string
		ok         bool
	}{
		{"cluster.local/ns/default/sa/www", "cluster.local", "default", "www", true},
		{"cluster.local/ns/default/sa/", "", "", "", false},
		{"cluster.local/sa/default/ns/www", "", "", "", false},
		{"spiffe://cluster.local/ns/a/sa/b/c", "", "", "", false},
	}
	for _, tt := range tests {
		td, ns, sa, ok := ParsePrincipal(tt.in)
		require.Equal(t, []any{tt.td, tt.ns, tt.sa, tt.ok}, []any{td, ns, sa, ok}, tt.in)
	}
}

func TestValidPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/a/b": true, "/api/*": true, "*.html": true, "*": true,
		"": false, "a": false, "/a/*/b": false, "*/a*": false, "**": false, "/a b": false,
	} {
		require.Equal(t, want, validPath(p), p)
	}
}
