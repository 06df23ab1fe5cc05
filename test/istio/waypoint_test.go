package istiotest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"

	"istio.io/api/label"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/test"
)

// The ambient fixture: namespace default enrolled in its waypoint
// (istio.io/use-waypoint on each Service), the waypoint's Gateway, Service
// and one instance, and three HTTP Services whose pods ztunnel redirects.
const (
	waypointIP      = "10.30.0.2"
	waypointFixture = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: default
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
status:
  addresses:
  - type: Hostname
    value: waypoint.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: default
  labels:
    gateway.istio.io/managed: istio.io-mesh-controller
    gateway.networking.k8s.io/gateway-name: waypoint
spec:
  clusterIP: 10.30.0.1
  ports:
  - appProtocol: hbone
    name: mesh
    port: 15008
  selector:
    gateway.networking.k8s.io/gateway-name: waypoint
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: waypoint-0
  namespace: default
spec:
  address: ` + waypointIP + `
  labels:
    gateway.networking.k8s.io/gateway-name: waypoint
`
	ambientApp = `apiVersion: v1
kind: Service
metadata:
  name: {{name}}
  namespace: default
  labels:
    istio.io/use-waypoint: waypoint
spec:
  clusterIP: 10.30.1.{{n}}
  ports:
  - name: http
    port: 8080
    appProtocol: http
  selector:
    app: {{name}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {{name}}-0
  namespace: default
  labels:
    app: {{name}}
  annotations:
    ambient.istio.io/redirection: enabled
spec:
  containers:
  - name: app
    image: app
status:
  phase: Running
  conditions:
  - status: "True"
    type: Ready
  podIP: 10.30.2.{{n}}
  podIPs:
  - ip: 10.30.2.{{n}}
`
)

var ambientApps = []string{"api", "cart", "plain"}

// TestWaypointExtAuthz renders the waypoint mode (policies and the
// extension provider) for an ambient namespace, feeds it to Istio's
// discovery server with ambient enabled, and checks the HTTP filters Istio
// builds for the waypoint proxy, per Service: with the namespace inspected
// (targetRef to the waypoint Gateway), every Service's chain calls meshwaf;
// with Services named (targetRef kind Service), exactly those do and the
// others have no ext_authz.
func TestWaypointExtAuthz(t *testing.T) {
	// Istio's own waypoint tests turn ambient on the same way; the
	// sub-flags keep their defaults.
	test.SetForTest(t, &features.EnableAmbient, true)
	var apps []string
	for i, name := range ambientApps {
		apps = append(apps, strings.NewReplacer("{{name}}", name, "{{n}}", fmt.Sprint(i+10)).Replace(ambientApp))
	}
	fixture := strings.Join(append([]string{waypointFixture}, apps...), "\n---\n")

	for _, tc := range []struct {
		name      string
		mode      string
		args      []string
		inspected []string
	}{
		{"namespace", "waypoint", nil, ambientApps},
		{"services", "waypoint", []string{"--waypoint-service", "default/cart", "--waypoint-service", "default/api"}, []string{"api", "cart"}},
		{"one service", "waypoint", []string{"--waypoint-service", "default/plain"}, []string{"plain"}},
		// Why targetRefs: the mesh mode's selector-based policy does
		// nothing on a waypoint, even one carrying the opt-in label.
		{"mesh mode's selector", "mesh", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"manifests", "--mode", tc.mode}, installFlags...), tc.args...)
			out := meshwaf(t, args...)
			istioConfigs(t, strings.Join(args, " "), out) // Istio's own validation
			_, opOthers := istioConfigs(t, "istio-operator", meshwaf(t, append(args, "--part", "istio-operator")...))
			all := fixture + "\n---\n" + strings.TrimSpace(out)
			s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
				ConfigString:           all,
				KubernetesObjectString: all,
				MeshConfig:             meshConfigFrom(t, opOthers),
			})
			p := s.SetupProxy(&model.Proxy{
				Type:            model.Waypoint,
				ConfigNamespace: "default",
				Labels: map[string]string{
					label.IoK8sNetworkingGatewayGatewayName.Name: "waypoint",
					label.GatewayManaged.Name:                    constants.ManagedGatewayMeshControllerLabel,
					optInLabel:                                   optInValue,
				},
				IPAddresses: []string{waypointIP},
			})
			var clusters []string
			for _, c := range s.Clusters(p) {
				clusters = append(clusters, c.GetName())
			}
			if !slices.Contains(clusters, meshwafCluster) {
				t.Errorf("the waypoint has no cluster %s: every check would fail (clusters: %v)", meshwafCluster, clusters)
			}
			chains := waypointChains(t, s, p)
			for _, app := range ambientApps {
				host := app + ".default.svc.cluster.local"
				fc, ok := chains[host]
				if !ok {
					t.Errorf("%s: no HTTP filter chain on the waypoint (chains: %v)", host, sortedKeys(chains))
					continue
				}
				var found []*extauthz.ExtAuthz
				authzAt, routerAt := -1, -1
				filters := httpFilters(t, fc)
				for i, hf := range filters {
					switch hf.GetName() {
					case httpExtAuthz:
						m := &extauthz.ExtAuthz{}
						unmarshal(t, hf.GetTypedConfig(), m)
						found = append(found, m)
						authzAt = i
					case httpRouter:
						routerAt = i
					}
				}
				if !slices.Contains(tc.inspected, app) {
					if len(found) > 0 {
						t.Errorf("%s: ext_authz on a Service the policies do not target (filters: %v)", host, filterNames(filters))
					}
					continue
				}
				if len(found) != 1 {
					t.Errorf("%s: %d ext_authz filters, want 1 (filters: %v)", host, len(found), filterNames(filters))
					continue
				}
				if authzAt > routerAt {
					t.Errorf("%s: ext_authz after the router: %v", host, filterNames(filters))
				}
				checkExtAuthzConfig(t, host, found[0], meshwafCluster)
				checkHealthPathsExcluded(t, host, chainRBAC(t, fc).shadow)
			}
		})
	}
}

// waypointChains returns the HTTP filter chains of the waypoint's
// main_internal listener, one per Service, by Service host.
func waypointChains(t *testing.T, s *xds.FakeDiscoveryServer, p *model.Proxy) map[string]*listener.FilterChain {
	t.Helper()
	chains := map[string]*listener.FilterChain{}
	var names []string
	for _, l := range s.Listeners(p) {
		names = append(names, l.GetName())
		if l.GetName() != "main_internal" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			// Named inbound-vip|PORT|http|HOST by Istio.
			parts := strings.Split(fc.GetName(), "|")
			if len(parts) == 4 && parts[2] == "http" && httpFilters(t, fc) != nil {
				chains[parts[3]] = fc
			}
		}
		return chains
	}
	t.Fatalf("the waypoint has no main_internal listener (listeners: %v)", names)
	return nil
}
