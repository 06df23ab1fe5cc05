package istiotest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"sigs.k8s.io/yaml"

	"istio.io/api/label"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// The ambient segmentation seed: shop's HTTP services behind the waypoint
// "waypoint", shop/cache and pay/ledger without one.
const ambientGraph = "istio/testdata/graphs/ambient.yaml"

// ambientGraphT is the part of the ambient graph the intent needs, read
// leniently like graph.
type ambientGraphT struct {
	Spec struct {
		Settings struct {
			Scraper *struct {
				Namespace      string `json:"namespace"`
				ServiceAccount string `json:"serviceAccount"`
			} `json:"scraper"`
		} `json:"settings"`
		Services []struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			Waypoint  string `json:"waypoint"`
			Ingress   bool   `json:"ingress"`
			Inspect   bool   `json:"inspect"`
			Ports     []struct {
				Port     int    `json:"port"`
				Protocol string `json:"protocol"`
				Metrics  bool   `json:"metrics"`
			} `json:"ports"`
		} `json:"services"`
		Edges []struct {
			From    string   `json:"from"`
			To      string   `json:"to"`
			Ports   []int    `json:"ports"`
			Methods []string `json:"methods"`
			Paths   []string `json:"paths"`
		} `json:"edges"`
	} `json:"spec"`
}

// ambientPod renders one captured pod, its Service (enrolled in its
// waypoint when it has one) and namespace labels as YAML.
func ambientPod(ns, name, sa, ip, clusterIP, waypoint string, labels map[string]string, ports []int, protocols map[int]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n", name, ns)
	if waypoint != "" {
		fmt.Fprintf(&b, "  labels:\n    istio.io/use-waypoint: %s\n", waypoint)
	}
	fmt.Fprintf(&b, "spec:\n  clusterIP: %s\n  ports:\n", clusterIP)
	for _, p := range ports {
		proto := "tcp"
		if protocols[p] != "" {
			proto = strings.ToLower(protocols[p])
		}
		fmt.Fprintf(&b, "  - {name: %s-%d, port: %d, targetPort: %d, appProtocol: %s}\n", proto, p, p, p, proto)
	}
	b.WriteString("  selector:\n")
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&b, "    %s: %s\n", k, labels[k])
	}
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s-0\n  namespace: %s\n  annotations:\n    ambient.istio.io/redirection: enabled\n  labels:\n", name, ns)
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&b, "    %s: %s\n", k, labels[k])
	}
	fmt.Fprintf(&b, "spec:\n  serviceAccountName: %s\n  nodeName: node-1\n  containers: [{name: app, image: app}]\n", sa)
	fmt.Fprintf(&b, "status:\n  phase: Running\n  conditions: [{type: Ready, status: \"True\"}]\n  podIP: %s\n  podIPs: [{ip: %s}]\n", ip, ip)
	return b.String()
}

// ambientIdentity is a caller: its Istio principal (no spiffe://).
type ambientIdentity struct{ id, principal string }

// TestAmbientPolicies renders `policy generate --dataplane ambient` for the
// ambient seed graph, feeds it with the graph's workloads, Services and
// waypoint to Istio's discovery server with ambient on, and checks both
// enforcement points against the intent computed here from the graph:
//
//   - the waypoint: the RBAC filters Istio builds on the waypoint's chain of
//     each Service behind it admit exactly the graph's edges into that
//     Service, per port, HTTP method and path (Envoy's RBAC semantics);
//   - ztunnel: the istio.security.Authorization resources istiod sends a
//     ztunnel client, bound to the workloads as the Address resources say,
//     admit exactly: for a service behind a waypoint, the waypoint's
//     identity on the ports edges use, plus the ingress gateway and the
//     scraper, which reach pods directly; for a service without one, its
//     callers; for meshwaf, the waypoint of the inspected services.
func TestAmbientPolicies(t *testing.T) {
	test.SetForTest(t, &features.EnableAmbient, true)
	g := &ambientGraphT{}
	readInto(t, ambientGraph, g)
	const td = "cluster.local"
	principal := func(ns, sa string) string { return td + "/ns/" + ns + "/sa/" + sa }
	ingress := principal("istio-system", "istio-ingressgateway-service-account")
	scraper := principal(g.Spec.Settings.Scraper.Namespace, g.Spec.Settings.Scraper.ServiceAccount)

	// Callers: every service, the ingress gateway, the scraper and each waypoint.
	callers := []ambientIdentity{{"ingress", ingress}, {"scraper", scraper}}
	waypointOf := map[string]string{} // ns/name -> waypoint principal
	var objs []string
	namespaces := map[string]bool{}
	for i, s := range g.Spec.Services {
		ref := s.Namespace + "/" + s.Name
		callers = append(callers, ambientIdentity{ref, principal(s.Namespace, s.Name)})
		var ports []int
		protocols := map[int]string{}
		for _, p := range s.Ports {
			ports = append(ports, p.Port)
			protocols[p.Port] = p.Protocol
		}
		objs = append(objs, ambientPod(s.Namespace, s.Name, s.Name, fmt.Sprintf("10.40.2.%d", i+10), fmt.Sprintf("10.40.1.%d", i+10),
			s.Waypoint, map[string]string{"app": s.Name}, ports, protocols))
		namespaces[s.Namespace] = true
		if s.Waypoint != "" {
			waypointOf[ref] = principal(s.Namespace, s.Waypoint)
			if s.Namespace != "shop" || s.Waypoint != "waypoint" {
				t.Fatalf("the fixture has one waypoint, shop/waypoint; %s names %s", ref, s.Waypoint)
			}
		}
	}
	wpPrincipal := principal("shop", "waypoint")
	callers = append(callers, ambientIdentity{"waypoint", wpPrincipal})
	objs = append(objs, ambientPod("meshwaf-system", "meshwaf", "meshwaf", "10.40.2.100", "10.40.1.100", "",
		map[string]string{"app": "meshwaf"}, []int{9000, 9090}, map[int]string{9000: "GRPC", 9090: "HTTP"}))
	objs = append(objs, strings.NewReplacer("namespace: default", "namespace: shop", waypointIP, "10.40.0.2",
		"waypoint.default.svc", "waypoint.shop.svc", "10.30.0.1", "10.40.0.1").Replace(waypointFixture))

	// The intent, from the graph alone.
	type edge struct {
		from           string
		methods, paths []string
		ports          map[int]bool
	}
	edgesTo := map[string][]edge{}
	portsOf := map[string][]int{}
	metrics := map[string]map[int]bool{}
	ingressOK := map[string]bool{}
	inspectedBehind := false
	for _, s := range g.Spec.Services {
		ref := s.Namespace + "/" + s.Name
		metrics[ref] = map[int]bool{}
		for _, p := range s.Ports {
			portsOf[ref] = append(portsOf[ref], p.Port)
			metrics[ref][p.Port] = p.Metrics
		}
		ingressOK[ref] = s.Ingress
		inspectedBehind = inspectedBehind || (s.Inspect && s.Waypoint != "")
	}
	resolve := func(r string) string {
		if strings.Contains(r, "/") {
			return r
		}
		for _, s := range g.Spec.Services {
			if s.Name == r {
				return s.Namespace + "/" + s.Name
			}
		}
		t.Fatalf("unknown service %s", r)
		return ""
	}
	for _, e := range g.Spec.Edges {
		to := resolve(e.To)
		ed := edge{from: principal(strings.Split(resolve(e.From), "/")[0], strings.Split(resolve(e.From), "/")[1]),
			methods: e.Methods, paths: e.Paths, ports: map[int]bool{}}
		ports := e.Ports
		if len(ports) == 0 {
			for _, p := range portsOf[to] {
				if !metrics[to][p] {
					ports = append(ports, p)
				}
			}
		}
		for _, p := range ports {
			ed.ports[p] = true
		}
		edgesTo[to] = append(edgesTo[to], ed)
	}
	// ztunnelWant: may identity reach ref:port at the workload's ztunnel.
	ztunnelWant := func(ref string, port int, who string) bool {
		if ref == "meshwaf-system/meshwaf" {
			return (port == 9000 && who == wpPrincipal && inspectedBehind) || (port == 9090 && who == scraper)
		}
		if who == scraper && metrics[ref][port] {
			return true
		}
		if who == ingress && ingressOK[ref] && !metrics[ref][port] {
			return true
		}
		for _, e := range edgesTo[ref] {
			if !e.ports[port] {
				continue
			}
			if wp := waypointOf[ref]; wp != "" {
				if who == wp {
					return true
				}
			} else if who == e.from {
				return true
			}
		}
		return false
	}
	// waypointWant: may the caller make this request to ref:port through the waypoint.
	waypointWant := func(ref string, port int, who, method, path string) bool {
		for _, e := range edgesTo[ref] {
			if e.from == who && e.ports[port] && (len(e.methods) == 0 || slices.Contains(e.methods, method)) &&
				(len(e.paths) == 0 || slices.ContainsFunc(e.paths, func(p string) bool { return matchString(p, path) })) {
				return true
			}
		}
		return false
	}

	out := meshwaf(t, "policy", "generate", "--dataplane", "ambient", "-f", ambientGraph)
	istioConfigs(t, "policy generate --dataplane ambient", out) // Istio's own validation

	// check returns every cell where Istio and the graph disagree, with
	// extra hand-written policies added to the generated ones.
	check := func(t *testing.T, extra string) []string {
		t.Helper()
		var problems []string
		report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
		all := strings.Join(append(objs, strings.TrimSpace(out)+extra), "\n---\n")
		s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{ConfigString: all, KubernetesObjectString: all})

		{ // the waypoint
			p := s.SetupProxy(&model.Proxy{
				Type:            model.Waypoint,
				ConfigNamespace: "shop",
				Labels: map[string]string{
					label.IoK8sNetworkingGatewayGatewayName.Name: "waypoint",
					label.GatewayManaged.Name:                    constants.ManagedGatewayMeshControllerLabel,
				},
				IPAddresses: []string{"10.40.0.2"},
			})
			chains := waypointTCPAndHTTPChains(t, s, p)
			checked := 0
			for ref := range waypointOf {
				ns, name, _ := strings.Cut(ref, "/")
				host := name + "." + ns + ".svc.cluster.local"
				for _, port := range portsOf[ref] {
					fc, ok := chains[fmt.Sprintf("%d|%s", port, host)]
					if !ok {
						report("%s:%d: no chain on the waypoint (chains: %v)", host, port, sortedKeys(chains))
						continue
					}
					rbacs := chainRBAC(t, fc).rules
					if len(rbacs) == 0 {
						report("%s:%d: no enforced RBAC on the waypoint: every caller passes", host, port)
						continue
					}
					for _, c := range callers {
						for _, m := range []string{"GET", "POST", "DELETE"} {
							for _, path := range []string{"/api/v1", "/health"} {
								got, err := rbacAllows(rbacs, rbacRequest{principal: "spiffe://" + c.principal, port: port, method: m, path: path})
								if err != nil {
									report("%s:%d: %v", host, port, err)
									continue
								}
								checked++
								if want := waypointWant(ref, port, c.principal, m, path); got != want {
									report("waypoint: %s -> %s:%d %s %s: Istio's RBAC says %v, the graph %v", c.id, ref, port, m, path, got, want)
								}
							}
						}
					}
				}
			}
			if checked == 0 {
				report("no waypoint cell checked")
			}
			t.Logf("%d waypoint cells checked", checked)
		}

		{ // ztunnel
			auths := map[string]*security.Authorization{}
			for _, r := range deltaResources(t, s, v3.WorkloadAuthorizationType) {
				a := &security.Authorization{}
				unmarshal(t, r.GetResource(), a)
				auths[a.GetNamespace()+"/"+a.GetName()] = a
			}
			workloads := map[string]*workloadapi.Workload{}
			for _, r := range deltaResources(t, s, v3.AddressType) {
				a := &workloadapi.Address{}
				unmarshal(t, r.GetResource(), a)
				if w := a.GetWorkload(); w != nil {
					workloads[w.GetNamespace()+"/"+strings.TrimSuffix(w.GetName(), "-0")] = w
				}
			}
			for _, name := range sortedKeys(auths) {
				for _, wp := range []string{"allow-nothing-waypoint-", "meshwaf-waypoint-allow-"} {
					if strings.Contains(name, wp) {
						report("ztunnel received %s, a policy attached to the waypoint", name)
					}
				}
			}
			dests := append(sortedKeys(portsOf), "meshwaf-system/meshwaf")
			checked := 0
			for _, ref := range dests {
				w, ok := workloads[ref]
				if !ok {
					report("%s: no Workload in the Address resources (have %v)", ref, sortedKeys(workloads))
					continue
				}
				ports := portsOf[ref]
				if ref == "meshwaf-system/meshwaf" {
					ports = []int{9000, 9090}
				}
				for _, port := range ports {
					for _, c := range callers {
						got, err := ztunnelAllows(auths, w, "istio-system", c.principal, port)
						if err != nil {
							report("%v", err)
							continue
						}
						checked++
						if want := ztunnelWant(ref, port, c.principal); got != want {
							report("ztunnel: %s -> %s:%d: Istio's Authorization says %v, the graph %v (policies bound: %v)", c.id, ref, port, got, want, w.GetAuthorizationPolicies())
						}
					}
				}
			}
			t.Logf("%d ztunnel cells checked; %d Authorization resources", checked, len(auths))
		}
		return problems
	}

	t.Run("generated", func(t *testing.T) {
		for _, p := range check(t, "") {
			t.Error(p)
		}
	})
	// The checker catches a caller that bypasses the waypoint (admitted at
	// api's ztunnel) and one the waypoint admits beyond the graph.
	t.Run("extra flows are caught", func(t *testing.T) {
		got := check(t, extraPolicies)
		want := []string{
			"waypoint: shop/cache -> shop/orders:8080 DELETE /api/v1: Istio's RBAC says true, the graph false",
			"waypoint: shop/cache -> shop/orders:8080 DELETE /health: Istio's RBAC says true, the graph false",
			"ztunnel: shop/www -> shop/api:8080: Istio's Authorization says true, the graph false",
		}
		var trimmed []string
		for _, p := range got {
			p, _, _ = strings.Cut(p, " (policies bound")
			trimmed = append(trimmed, p)
		}
		slices.Sort(trimmed)
		if !slices.Equal(trimmed, want) {
			t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(trimmed, "\n"), strings.Join(want, "\n"))
		}
		// meshwaf's own verify sees the flow the waypoint adds; the direct
		// www -> api admission is no flow of its matrix (graph services
		// always go through the waypoint), so only Istio's check shows it.
		dir := t.TempDir()
		file := filepath.Join(dir, "policies.yaml")
		if err := os.WriteFile(file, []byte(out+extraPolicies), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, env.meshwaf, "policy", "verify", "--dataplane", "ambient", "--graph", ambientGraph, "-f", file)
		cmd.Dir = env.repo
		vout, err := cmd.Output()
		if err == nil || !strings.Contains(string(vout), "extra: allowed but not planned (1):\n  shop/cache -> shop/orders:8080\n") {
			t.Errorf("meshwaf policy verify --dataplane ambient (err %v):\n%s", err, vout)
		}
	})
}

// extraPolicies admit www at api's ztunnel, bypassing the waypoint, and
// cache -> orders for DELETE at the waypoint: neither is in the graph.
const extraPolicies = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: www-direct-to-api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/www]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cache-to-orders, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: orders}]
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/cache]}}], to: [{operation: {methods: [DELETE]}}]}]
`

// waypointTCPAndHTTPChains returns the waypoint's main_internal filter
// chains by "port|host" (Istio names them inbound-vip|PORT|PROTO|HOST).
func waypointTCPAndHTTPChains(t *testing.T, s *xds.FakeDiscoveryServer, p *model.Proxy) map[string]*listener.FilterChain {
	t.Helper()
	chains := map[string]*listener.FilterChain{}
	for _, l := range s.Listeners(p) {
		if l.GetName() != "main_internal" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			parts := strings.Split(fc.GetName(), "|")
			if len(parts) == 4 {
				chains[parts[1]+"|"+parts[3]] = fc
			}
		}
		return chains
	}
	t.Fatal("the waypoint has no main_internal listener")
	return nil
}

// deltaResources subscribes a ztunnel client to every resource of typeURL
// over delta xDS and returns the first response's resources.
func deltaResources(t *testing.T, s *xds.FakeDiscoveryServer, typeURL string) []*discovery.Resource {
	t.Helper()
	ads := s.ConnectDeltaADS().WithType(typeURL).WithNodeType(model.Ztunnel).WithMetadata(model.NodeMetadata{NodeName: "node-1"})
	defer ads.Cleanup()
	resp := ads.RequestResponseAck(&discovery.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"*"}})
	if len(resp.GetResources()) == 0 {
		t.Fatalf("%s: no resources", typeURL)
	}
	return resp.GetResources()
}

// ztunnelAllows evaluates Istio's ztunnel Authorization resources for one
// connection the way ztunnel does: the policies that apply are the global
// ones (root namespace), those of the workload's namespace, and those bound
// to the workload by name; a matching DENY denies; with any ALLOW policy,
// one must match. A policy matches when one of its groups does; a group
// when all its rules do; a rule when one of its matches does; a match when
// every list it sets holds. Principals are compared without spiffe://.
// Attributes this test does not model (IPs, extensions) are an error.
func ztunnelAllows(auths map[string]*security.Authorization, w *workloadapi.Workload, root, who string, port int) (bool, error) {
	var applicable []*security.Authorization
	for _, key := range sortedKeys(auths) {
		a := auths[key]
		switch a.GetScope() {
		case security.Scope_GLOBAL:
			if a.GetNamespace() != root {
				continue
			}
		case security.Scope_NAMESPACE:
			if a.GetNamespace() != w.GetNamespace() {
				continue
			}
		case security.Scope_WORKLOAD_SELECTOR:
			if !slices.Contains(w.GetAuthorizationPolicies(), key) {
				continue
			}
		default:
			return false, fmt.Errorf("%s: scope %v", key, a.GetScope())
		}
		applicable = append(applicable, a)
	}
	hasAllow, allowed := false, false
	for _, a := range applicable {
		m, err := authorizationMatches(a, who, port)
		if err != nil {
			return false, fmt.Errorf("%s/%s: %w", a.GetNamespace(), a.GetName(), err)
		}
		switch a.GetAction() {
		case security.Action_DENY:
			if m {
				return false, nil
			}
		case security.Action_ALLOW:
			hasAllow = true
			allowed = allowed || m
		default:
			return false, fmt.Errorf("action %v", a.GetAction())
		}
	}
	return !hasAllow || allowed, nil
}

func authorizationMatches(a *security.Authorization, who string, port int) (bool, error) {
	_, rest, _ := strings.Cut(who, "/ns/")
	ns, _, _ := strings.Cut(rest, "/sa/")
	for _, g := range a.GetGroups() {
		all := true
		for _, r := range g.GetRules() {
			matched := false
			for _, m := range r.GetMatches() {
				if len(m.GetSourceIps())+len(m.GetNotSourceIps())+len(m.GetDestinationIps())+len(m.GetNotDestinationIps())+len(m.GetExtensions()) > 0 {
					return false, fmt.Errorf("match the test does not model: %v", m)
				}
				ok := listMatch(m.GetPrincipals(), who, true) && !listMatch(m.GetNotPrincipals(), who, false) &&
					listMatch(m.GetNamespaces(), ns, true) && !listMatch(m.GetNotNamespaces(), ns, false) &&
					saMatch(m.GetServiceAccounts(), who, true) && !saMatch(m.GetNotServiceAccounts(), who, false) &&
					(len(m.GetDestinationPorts()) == 0 || slices.Contains(m.GetDestinationPorts(), uint32(port))) &&
					!slices.Contains(m.GetNotDestinationPorts(), uint32(port))
				if ok {
					matched = true
					break
				}
			}
			if !matched {
				all = false
				break
			}
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

// listMatch: does some StringMatch of list match v; an empty list gives empty.
func listMatch(list []*security.StringMatch, v string, empty bool) bool {
	if len(list) == 0 {
		return empty
	}
	for _, m := range list {
		switch x := m.GetMatchType().(type) {
		case *security.StringMatch_Exact:
			if v == x.Exact {
				return true
			}
		case *security.StringMatch_Prefix:
			if strings.HasPrefix(v, x.Prefix) {
				return true
			}
		case *security.StringMatch_Suffix:
			if strings.HasSuffix(v, x.Suffix) {
				return true
			}
		case *security.StringMatch_Presence:
			if v != "" {
				return true
			}
		}
	}
	return false
}

func saMatch(list []*security.ServiceAccountMatch, who string, empty bool) bool {
	if len(list) == 0 {
		return empty
	}
	for _, m := range list {
		if strings.HasSuffix(who, "/ns/"+m.GetNamespace()+"/sa/"+m.GetServiceAccount()) {
			return true
		}
	}
	return false
}

// matchString is Istio's string match in policies: "*", "prefix*",
// "*suffix", exact.
func matchString(pattern, v string) bool {
	switch {
	case pattern == "*":
		return v != ""
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(v, pattern[1:])
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(v, pattern[:len(pattern)-1])
	}
	return pattern == v
}

// readInto decodes the repository file at path into v.
func readInto(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.repo, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
