package istiotest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
)

// egressFixture is the seed graph's workloads, meshwaf as the mesh-mode
// install renders it (Service, CUSTOM policy, ext_authz provider), the
// cluster DNS, and a service no edge names.
type egressFixture struct {
	g     *graph
	ws    []workload
	cfgs  []config.Config
	objs  []runtime.Object
	mc    *meshConfig
	ports map[string][]int32 // Service FQDN -> TCP ports
}

func newEgressFixture(t *testing.T) *egressFixture {
	t.Helper()
	f := &egressFixture{g: readGraph(t, shopGraph)}
	f.ws = graphWorkloads(f.g)
	args := append([]string{"manifests", "--mode", "mesh"}, installFlags...)
	cfgs, others := istioConfigs(t, "manifests --mode mesh", meshwaf(t, args...))
	_, opOthers := istioConfigs(t, "manifests --mode mesh --part istio-operator", meshwaf(t, append(args, "--part", "istio-operator")...))
	f.cfgs, f.mc = cfgs, meshConfigFrom(t, opOthers)
	other := workload{name: "other", namespace: "other", serviceAccount: "other",
		labels: map[string]string{"app": "other"}, ip: "10.10.3.10", ports: []int32{80}}
	f.objs = append(kubeObjects(append(append([]workload(nil), f.ws...), other)), serviceObjects(t, others)...)
	f.objs = append(f.objs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"k8s-app": "kube-dns"}, Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
			}},
		})
	f.ports = map[string][]int32{}
	for _, o := range f.objs {
		if s, ok := o.(*corev1.Service); ok {
			fqdn := s.Name + "." + s.Namespace + ".svc.cluster.local"
			for _, p := range s.Spec.Ports {
				if p.Protocol == corev1.ProtocolTCP || p.Protocol == "" {
					f.ports[fqdn] = append(f.ports[fqdn], p.Port)
				}
			}
		}
	}
	return f
}

// wantHosts is, per workload, what the graph says its sidecar needs, read
// from the graph here (not from meshwaf): the services its edges name, the
// cluster DNS, and meshwaf's Service when it is inspected.
func (f *egressFixture) wantHosts(t *testing.T) map[string]map[string]bool {
	t.Helper()
	want := map[string]map[string]bool{}
	ref := func(r string) string { // "ns/name" or "name" (default namespace in the seed)
		ns, name, ok := strings.Cut(r, "/")
		if !ok {
			ns, name = "default", r
		}
		return name + "." + ns + ".svc.cluster.local"
	}
	for _, w := range f.ws {
		want[w.name] = map[string]bool{"kube-dns.kube-system.svc.cluster.local": true}
		if w.inspect {
			want[w.name]["meshwaf.meshwaf-system.svc.cluster.local"] = true
		}
	}
	for _, e := range f.g.Spec.Edges {
		from := strings.TrimPrefix(e.From, "default/")
		want[from][ref(e.To)] = true
	}
	return want
}

// outboundClusters is "host:port" for every outbound cluster Istio
// generates for the proxy, and the names of the other clusters.
func outboundClusters(s *xds.FakeDiscoveryServer, p *model.Proxy) (map[string]bool, []string) {
	out := map[string]bool{}
	var others []string
	for _, c := range s.Clusters(p) {
		parts := strings.Split(c.GetName(), "|")
		if len(parts) == 4 && parts[0] == "outbound" {
			out[parts[3]+":"+parts[1]] = true
			continue
		}
		others = append(others, c.GetName())
	}
	return out, others
}

// TestEgressSidecarCDS feeds the Sidecars `policy generate --egress`
// renders for the seed graph (with its AuthorizationPolicies and the
// mesh-mode install) to Istio's discovery server and reads back each
// sidecar's CDS: its outbound clusters must be exactly the graph's
// destinations of that workload, on every port their Services declare,
// plus the cluster DNS and, for inspected workloads, meshwaf's gRPC Service.
// Without the Sidecars, every sidecar gets every service, so the check can
// fail.
func TestEgressSidecarCDS(t *testing.T) {
	f := newEgressFixture(t)
	want := f.wantHosts(t)
	if !want["www"]["auth.default.svc.cluster.local"] || want["auth"]["db.default.svc.cluster.local"] {
		t.Fatalf("the seed graph %s no longer plans www -> auth and not auth -> db", shopGraph)
	}
	gen, others := istioConfigs(t, "policy generate --egress", meshwaf(t, "policy", "generate", "-f", shopGraph, "--egress"))
	if len(others) > 0 {
		t.Fatalf("policy generate --egress: %d documents Istio does not take", len(others))
	}
	sidecars := 0
	for _, c := range gen {
		if c.GroupVersionKind.Kind == "Sidecar" {
			sidecars++
		}
	}
	if sidecars != len(f.ws) {
		t.Fatalf("%d Sidecars for %d workloads", sidecars, len(f.ws))
	}

	t.Run("without Sidecars every service is imported", func(t *testing.T) {
		s := newServer(t, f.cfgs, f.objs, f.mc)
		for _, w := range f.ws {
			got, _ := outboundClusters(s, proxy(s, w))
			for _, h := range []string{"other.other.svc.cluster.local:80", "www.default.svc.cluster.local:8080", "db.default.svc.cluster.local:8080"} {
				if !got[h] {
					t.Errorf("%s: no cluster %s without Sidecars: the fixture does not show trimming", w.name, h)
				}
			}
		}
	})

	s := newServer(t, append(append([]config.Config(nil), f.cfgs...), gen...), f.objs, f.mc)
	for _, w := range f.ws {
		t.Run(w.name, func(t *testing.T) {
			got, others := outboundClusters(s, proxy(s, w))
			exp := map[string]bool{}
			for h := range want[w.name] {
				if len(f.ports[h]) == 0 {
					t.Fatalf("no Service %s in the fixture", h)
				}
				for _, p := range f.ports[h] {
					exp[fmt.Sprintf("%s:%d", h, p)] = true
				}
			}
			for _, c := range sortedKeys(exp) {
				if !got[c] {
					t.Errorf("planned destination missing from CDS: %s", c)
				}
			}
			for _, c := range sortedKeys(got) {
				if !exp[c] {
					t.Errorf("outbound cluster not in the graph: %s", c)
				}
			}
			for _, o := range others {
				if !strings.HasPrefix(o, "inbound|") && o != "BlackHoleCluster" && o != "PassthroughCluster" && o != "InboundPassthroughCluster" {
					t.Errorf("unexpected cluster %s", o)
				}
			}
			t.Logf("outbound clusters: %s", joinSet(got))
		})
	}
}

// TestEgressRegistryOnly shows what makes the scoping enforcing: under
// Istio's default ALLOW_ANY the outbound listener sends what matches no
// imported service to the PassthroughCluster (so an un-imported service is
// still reached, by IP); with meshConfig.outboundTrafficPolicy.mode
// REGISTRY_ONLY it goes to the BlackHoleCluster.
func TestEgressRegistryOnly(t *testing.T) {
	f := newEgressFixture(t)
	gen, _ := istioConfigs(t, "policy generate --egress", meshwaf(t, "policy", "generate", "-f", shopGraph, "--egress"))
	cfgs := append(append([]config.Config(nil), f.cfgs...), gen...)
	for _, tc := range []struct {
		mode meshconfig.MeshConfig_OutboundTrafficPolicy_Mode
		want string
		not  string
	}{
		{meshconfig.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY, "PassthroughCluster", "BlackHoleCluster"},
		{meshconfig.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY, "BlackHoleCluster", "PassthroughCluster"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			mc := proto.Clone(f.mc).(*meshConfig)
			mc.OutboundTrafficPolicy = &meshconfig.MeshConfig_OutboundTrafficPolicy{Mode: tc.mode}
			s := newServer(t, cfgs, f.objs, mc)
			for _, w := range f.ws {
				got := unmatchedOutbound(t, s.Listeners(proxy(s, w)))
				if !got[tc.want] || got[tc.not] {
					t.Errorf("%s: traffic to un-imported destinations goes to %s, want %s", w.name, joinSet(got), tc.want)
				}
			}
		})
	}
}

// unmatchedOutbound is the set of clusters the virtualOutbound listener's
// catch-all chains (its default chain and the catch-all TCP chain) send to.
func unmatchedOutbound(t *testing.T, ls []*listenerT) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range ls {
		if l.GetName() != model.VirtualOutboundListenerName {
			continue
		}
		chains := append(l.GetFilterChains(), l.GetDefaultFilterChain())
		for _, fc := range chains {
			if fc == nil || (fc != l.GetDefaultFilterChain() && fc.GetName() != model.VirtualOutboundCatchAllTCPFilterChainName) {
				continue
			}
			for _, nf := range fc.GetFilters() {
				if nf.GetName() != "envoy.filters.network.tcp_proxy" {
					continue
				}
				tp := &tcpproxy.TcpProxy{}
				unmarshal(t, nf.GetTypedConfig(), tp)
				out[tp.GetCluster()] = true
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no catch-all chain on virtualOutbound")
	}
	return out
}

// TestXDSNotScopedBySidecar backs leaving istiod out of the Sidecars'
// hosts: the proxy reaches istiod through istio-agent over the bootstrap's
// static xds-grpc cluster (a Unix socket), not through any cluster of CDS,
// so no Sidecar can cut it off. Read from the bootstrap template of the
// Istio this module builds against.
func TestXDSNotScopedBySidecar(t *testing.T) {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio").Output()
	if err != nil {
		t.Fatalf("locating istio.io/istio: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(dir)), "tools", "packaging", "common", "envoy_bootstrap.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, `"name": "xds-grpc"`)
	if i < 0 {
		t.Fatalf("%s: no xds-grpc cluster", path)
	}
	end := strings.Index(text[i:], `"name": "`+"zipkin")
	cluster := text[i:]
	if end > 0 {
		cluster = text[i : i+end]
	}
	cluster = cluster[:min(len(cluster), 800)]
	for _, w := range []string{`"type" : "STATIC"`, `"pipe"`, `/XDS"`} {
		if !strings.Contains(cluster, w) {
			t.Errorf("%s: the xds-grpc cluster lacks %s:\n%s", path, w, cluster)
		}
	}
}
