package istiotest

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"k8s.io/apimachinery/pkg/runtime"

	"istio.io/istio/pkg/config"
)

// The install settings the test renders with: not the defaults, so a
// setting that does not reach Envoy shows.
const (
	checkTimeout    = 250 * time.Millisecond
	maxRequestBytes = 65536
	meshwafCluster  = "outbound|9000||meshwaf.meshwaf-system.svc.cluster.local"
	localCluster    = "outbound|9000||meshwaf.local"
)

// healthPaths are the install's default exclusions from inspection.
var healthPaths = []string{"/healthz", "/readyz", "/livez"}

var installFlags = []string{"--timeout", checkTimeout.String(), "--max-request-bytes", "65536"}

// TestExtAuthzFilter renders the mesh-mode install (MeshConfig extension
// provider from the IstioOperator overlay, plus the CUSTOM policy) and,
// separately, the EnvoyFilter install, feeds each to Istio's discovery
// server with the seed workloads (which carry the opt-in label) and one
// workload without it, and checks the HTTP filters Istio builds for each
// sidecar's inbound chains: one ext_authz filter, before the router,
// calling meshwaf's cluster with the configured timeout and body settings,
// on every HTTP chain of an opted-in workload; none on the other.
func TestExtAuthzFilter(t *testing.T) {
	g := readGraph(t, shopGraph)
	ws := graphWorkloads(g)
	for _, w := range ws {
		if !w.inspect {
			t.Fatalf("the seed graph no longer opts %s in", w.name)
		}
	}
	plain := workload{
		name: "plain", namespace: "default", serviceAccount: "plain",
		labels: map[string]string{"app": "plain"}, ip: "10.10.1.10", ports: []int32{8080},
	}
	ws = append(ws, plain)

	for _, tc := range []struct {
		mode, cluster string
		provider      bool // the mode has an IstioOperator overlay
	}{
		{"mesh", meshwafCluster, true},
		{"envoyfilter", meshwafCluster, false},
		// The per-pod mode: meshwaf on the pod's loopback, through a
		// ServiceEntry (not asked for by the check; cheap to add).
		{"pod", localCluster, true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			args := append([]string{"manifests", "--mode", tc.mode}, installFlags...)
			out := meshwaf(t, args...)
			cfgs, others := istioConfigs(t, "manifests --mode "+tc.mode, out)
			objs := append(kubeObjects(ws), serviceObjects(t, others)...)
			var mc *meshConfig
			if tc.provider {
				op := meshwaf(t, append(args, "--part", "istio-operator")...)
				_, opOthers := istioConfigs(t, "manifests --mode "+tc.mode+" --part istio-operator", op)
				mc = meshConfigFrom(t, opOthers)
			}
			checkExtAuthz(t, cfgs, objs, mc, ws, tc.cluster, tc.provider)
		})
	}
}

// With custom set (a CUSTOM policy selects the workloads), the shadow RBAC
// rules that decide which requests go to ext_authz must name the
// health-check paths the install excludes.
func checkExtAuthz(t *testing.T, cfgs []config.Config, objs []runtime.Object, mc *meshConfig, ws []workload, cluster string, custom bool) {
	t.Helper()
	s := newServer(t, cfgs, objs, mc)
	for _, w := range ws {
		t.Run(w.name, func(t *testing.T) {
			optedIn := w.labels[optInLabel] == optInValue
			p := proxy(s, w)
			if optedIn {
				// The filter's cluster must exist in the sidecar's CDS, or
				// every check fails at run time.
				var names []string
				for _, c := range s.Clusters(p) {
					names = append(names, c.GetName())
				}
				if !slices.Contains(names, cluster) {
					t.Errorf("the sidecar has no cluster %s (clusters: %v)", cluster, names)
				}
			}
			httpChains := 0
			for _, fc := range inboundChains(t, s.Listeners(p)) {
				filters := httpFilters(t, fc)
				if filters == nil {
					continue
				}
				httpChains++
				var found []*extauthz.ExtAuthz
				authzAt, routerAt := -1, -1
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
				if !optedIn {
					if len(found) > 0 {
						t.Errorf("%s: ext_authz on a workload without %s=%s: %v", chainName(fc), optInLabel, optInValue, found)
					}
					continue
				}
				if len(found) != 1 {
					t.Errorf("%s: %d ext_authz filters, want 1 (filters: %v)", chainName(fc), len(found), filterNames(filters))
					continue
				}
				if authzAt > routerAt {
					t.Errorf("%s: ext_authz after the router: %v", chainName(fc), filterNames(filters))
				}
				checkExtAuthzConfig(t, chainName(fc), found[0], cluster)
				if custom {
					checkHealthPathsExcluded(t, chainName(fc), chainRBAC(t, fc).shadow)
				}
			}
			if httpChains == 0 {
				t.Fatal("no HTTP inbound chains")
			}
		})
	}
}

func checkExtAuthzConfig(t *testing.T, chain string, m *extauthz.ExtAuthz, cluster string) {
	t.Helper()
	gs := m.GetGrpcService()
	if gs == nil {
		t.Errorf("%s: ext_authz is not a gRPC service: %v", chain, m)
		return
	}
	if got := gs.GetEnvoyGrpc().GetClusterName(); got != cluster {
		t.Errorf("%s: ext_authz cluster %q, want %q", chain, got, cluster)
	}
	if got := gs.GetTimeout().AsDuration(); got != checkTimeout {
		t.Errorf("%s: ext_authz timeout %s, want %s", chain, got, checkTimeout)
	}
	body := m.GetWithRequestBody()
	if got := body.GetMaxRequestBytes(); got != maxRequestBytes {
		t.Errorf("%s: with_request_body.max_request_bytes %d, want %d", chain, got, maxRequestBytes)
	}
	// The install defaults: bodies as raw bytes, fail closed with 403.
	if !body.GetPackAsBytes() {
		t.Errorf("%s: with_request_body.pack_as_bytes is off", chain)
	}
	if m.GetFailureModeAllow() {
		t.Errorf("%s: failure_mode_allow is on: fail open", chain)
	}
	if got := m.GetStatusOnError().GetCode(); got != 403 {
		t.Errorf("%s: status_on_error %d, want 403", chain, got)
	}
	if got := m.GetTransportApiVersion().String(); got != "V3" {
		t.Errorf("%s: transport_api_version %s, want V3", chain, got)
	}
}

func filterNames[T interface{ GetName() string }](fs []T) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.GetName()
	}
	return names
}

// checkHealthPathsExcluded: every CUSTOM shadow policy (the ones that send
// a request to ext_authz) excludes each health path as an exact path, under
// a not_rule; a health path under any other matcher fails, and so does a
// chain without such a policy.
func checkHealthPathsExcluded(t *testing.T, chain string, shadow []*rbacv3.RBAC) {
	t.Helper()
	policies := 0
	for _, r := range shadow {
		for _, name := range sortedKeys(r.GetPolicies()) {
			policies++
			exact := map[string]bool{}
			var other []string
			for _, perm := range r.GetPolicies()[name].GetPermissions() {
				excludedPaths(perm, false, exact, &other)
			}
			for _, path := range healthPaths {
				if !exact[path] {
					t.Errorf("%s: CUSTOM policy %s does not exclude health-check path %s exactly (excluded: %v):\n%s",
						chain, name, path, slices.Sorted(maps.Keys(exact)), prototext.Format(r.GetPolicies()[name]))
				}
			}
			for _, o := range other {
				for _, path := range healthPaths {
					if strings.Contains(o, strconv.Quote(path)) {
						t.Errorf("%s: CUSTOM policy %s matches health-check path %s other than as an excluded exact path: %s", chain, name, path, o)
					}
				}
			}
		}
	}
	if policies == 0 {
		t.Errorf("%s: no CUSTOM shadow policy", chain)
	}
}

// excludedPaths adds to exact the paths p matches exactly under an odd
// number of not_rules (url_path, or the :path header), and every other
// path or header matcher to other, as text.
func excludedPaths(p *rbacv3.Permission, negated bool, exact map[string]bool, other *[]string) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		for _, q := range r.AndRules.GetRules() {
			excludedPaths(q, negated, exact, other)
		}
	case *rbacv3.Permission_OrRules:
		for _, q := range r.OrRules.GetRules() {
			excludedPaths(q, negated, exact, other)
		}
	case *rbacv3.Permission_NotRule:
		excludedPaths(r.NotRule, !negated, exact, other)
	case *rbacv3.Permission_UrlPath:
		if sm := r.UrlPath.GetPath(); negated && sm.GetExact() != "" && !sm.GetIgnoreCase() {
			exact[sm.GetExact()] = true
		} else {
			*other = append(*other, prototext.Format(p))
		}
	case *rbacv3.Permission_Header:
		if h := r.Header; negated && h.GetName() == ":path" && h.GetStringMatch().GetExact() != "" && !h.GetStringMatch().GetIgnoreCase() && !h.GetInvertMatch() {
			exact[h.GetStringMatch().GetExact()] = true
		} else {
			*other = append(*other, prototext.Format(p))
		}
	}
}
