package istiotest

import (
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/encoding/prototext"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pkg/test"
)

// The second CUSTOM provider of the test: an HTTP ext_authz service such
// as oauth2-proxy, asked for /admin/* of the same workload.
const (
	otherProvider = "oauth2-proxy"
	otherCluster  = "outbound|4180||oauth2-proxy.auth.svc.cluster.local"
	otherPolicy   = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: admin-login
  namespace: default
spec:
  selector:
    matchLabels:
      app: www
  action: CUSTOM
  provider:
    name: oauth2-proxy
  rules:
  - to:
    - operation:
        paths: ["/admin/*"]
`
)

// TestMultipleCustomProviders feeds the mesh mode's install, a second
// CUSTOM provider and a policy of it on the same workload to Istio's
// generation, with istiod's PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS on
// and off. On: the sidecar gets two ext_authz filters, meshwaf's (its
// cluster and settings, enabled by the meshwaf provider's RBAC metadata)
// and the other provider's. Off: Istio refuses the pair and gives the
// workload no ext_authz at all but an RBAC filter that denies what either
// policy matches. With meshwaf's policy alone, one ext_authz either way.
func TestMultipleCustomProviders(t *testing.T) {
	g := readGraph(t, shopGraph)
	var www workload
	for _, w := range graphWorkloads(g) {
		if w.name == "www" {
			www = w
		}
	}
	if www.name == "" || !www.inspect {
		t.Fatal("the seed graph no longer has an opted-in www")
	}
	args := append([]string{"manifests", "--mode", "mesh"}, installFlags...)
	cfgs, others := istioConfigs(t, "manifests --mode mesh", meshwaf(t, args...))
	_, opOthers := istioConfigs(t, "istio-operator", meshwaf(t, append(args, "--part", "istio-operator")...))
	extra, _ := istioConfigs(t, "the other provider's policy", otherPolicy)
	objs := append(kubeObjects([]workload{www}), serviceObjects(t, others)...)
	objs = append(objs, otherProviderService())

	for _, tc := range []struct {
		name      string
		flag      bool
		second    bool
		wantAuthz []string // ext_authz clusters, in filter order
		wantDeny  bool
	}{
		{"flag on, two providers", true, true, []string{meshwafCluster, otherCluster}, false},
		{"flag off, two providers", false, true, nil, true},
		{"flag on, meshwaf alone", true, false, []string{meshwafCluster}, false},
		{"flag off, meshwaf alone", false, false, []string{meshwafCluster}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			test.SetForTest(t, &features.EnableMultipleCustomAuthzProviders, tc.flag)
			mc := meshConfigFrom(t, opOthers)
			mc.ExtensionProviders = append(mc.ExtensionProviders, &meshconfig.MeshConfig_ExtensionProvider{
				Name: otherProvider,
				Provider: &meshconfig.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp{
					EnvoyExtAuthzHttp: &meshconfig.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider{
						Service: "oauth2-proxy.auth.svc.cluster.local", Port: 4180,
					},
				},
			})
			all := cfgs
			if tc.second {
				all = append(cfgs[:len(cfgs):len(cfgs)], extra...) // a copy: cfgs stays
			}
			s := newServer(t, all, objs, mc)
			httpChains := 0
			for _, fc := range inboundChains(t, s.Listeners(proxy(s, www))) {
				filters := httpFilters(t, fc)
				if filters == nil {
					continue
				}
				httpChains++
				var clusters []string
				deny := false
				for _, hf := range filters {
					switch hf.GetName() {
					case httpExtAuthz:
						m := &extauthz.ExtAuthz{}
						unmarshal(t, hf.GetTypedConfig(), m)
						c := m.GetGrpcService().GetEnvoyGrpc().GetClusterName()
						if c == "" {
							c = m.GetHttpService().GetServerUri().GetCluster()
						}
						clusters = append(clusters, c)
						enabled := prototext.Format(m.GetFilterEnabledMetadata())
						if c == meshwafCluster {
							checkExtAuthzConfig(t, chainName(fc), m, meshwafCluster)
							if tc.flag && !strings.Contains(enabled, `"istio-ext-authz-meshwaf"`) {
								t.Errorf("%s: meshwaf's ext_authz is not enabled by the meshwaf provider's policies: %s", chainName(fc), enabled)
							}
						}
					case httpRBAC:
						m := &httprbac.RBAC{}
						unmarshal(t, hf.GetTypedConfig(), m)
						if r := m.GetRules(); r != nil && r.GetAction() == rbacv3.RBAC_DENY && len(r.GetPolicies()) > 0 {
							deny = true
						}
					}
				}
				if strings.Join(clusters, " ") != strings.Join(tc.wantAuthz, " ") {
					t.Errorf("%s: ext_authz clusters %v, want %v (filters: %v)", chainName(fc), clusters, tc.wantAuthz, filterNames(filters))
				}
				if deny != tc.wantDeny {
					t.Errorf("%s: a denying RBAC filter: %v, want %v (filters: %v)", chainName(fc), deny, tc.wantDeny, filterNames(filters))
				}
			}
			if httpChains == 0 {
				t.Fatal("no HTTP inbound chains")
			}
		})
	}
}

// otherProviderService is the second provider's Service, so Istio can
// build its cluster.
func otherProviderService() runtime.Object {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "oauth2-proxy", Namespace: "auth"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.30.10",
			Selector:  map[string]string{"app": "oauth2-proxy"},
			Ports:     []corev1.ServicePort{{Name: "http", Port: 4180, Protocol: corev1.ProtocolTCP}},
		},
	}
}
