package discover

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

func TestPortProtocol(t *testing.T) {
	ap := func(s string) *string { return &s }
	tests := []struct {
		port       corev1.ServicePort
		want, from string
	}{
		{corev1.ServicePort{Name: "http", Port: 80}, "HTTP", "port name http"},
		{corev1.ServicePort{Name: "http2-x", Port: 80}, "HTTP2", "port name http2-x"},
		{corev1.ServicePort{Name: "grpc-api", Port: 9000}, "GRPC", "port name grpc-api"},
		{corev1.ServicePort{Name: "https", Port: 443}, "TLS", "port name https"},
		{corev1.ServicePort{Name: "web", Port: 80, AppProtocol: ap("http")}, "HTTP", "appProtocol http"},
		{corev1.ServicePort{Name: "http", Port: 80, AppProtocol: ap("kubernetes.io/h2c")}, "HTTP2", "appProtocol kubernetes.io/h2c"},
		{corev1.ServicePort{Name: "db", Port: 5432}, "TCP", "default"},
		{corev1.ServicePort{Port: 5432}, "TCP", "default"},
	}
	for _, tt := range tests {
		got := portOf(tt.port)
		require.Equal(t, tt.want, got.Protocol, tt.port.Name)
		require.Equal(t, tt.from, got.From, tt.port.Name)
	}
	require.True(t, portOf(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}).UDP)
}

func TestPromQL(t *testing.T) {
	q := Query{Lookback: 7 * 24 * time.Hour, Step: DefaultStep(7 * 24 * time.Hour)}
	require.Equal(t, time.Hour, q.Step)
	count, first, last := q.PromQL(MetricRequests)
	require.Contains(t, count, `increase(istio_requests_total{reporter="destination"}[1w])`)
	require.Contains(t, count, "sum by (source_workload, source_workload_namespace, source_principal,")
	require.True(t, strings.HasPrefix(first, "min_over_time((timestamp(sum by ("), first)
	require.True(t, strings.HasSuffix(first, `[1h])) > 0))[1w:1h])`), first)
	require.True(t, strings.HasPrefix(last, "max_over_time("), last)
	require.Equal(t, time.Minute, DefaultStep(time.Hour))
}

// build runs Build and Graph over the demo inventory plus extra flows.
func build(t *testing.T, inv *Inventory, o Options, base *meshpolicy.Graph, flows ...Flow) (*Result, string) {
	t.Helper()
	r := Build(inv, flows, o).Graph(base, "hand.yaml")
	var b bytes.Buffer
	require.NoError(t, Write(&b, r))
	return r, b.String()
}

func TestBuildCases(t *testing.T) {
	gw := Workload{Kind: "Deployment", Namespace: "gateways", Name: "edge", Labels: map[string]string{"istio": "ingressgateway"}, ServiceAccount: "edge"}
	t.Run("ingress by label", func(t *testing.T) {
		inv := demoInventory()
		inv.Workloads = append(inv.Workloads, gw)
		f := flow("www", "www", true, 100)
		f.SourceWorkload, f.SourceNamespace, f.SourcePrincipal = "edge", "gateways", "cluster.local/ns/gateways/sa/edge"
		r, _ := build(t, inv, testOptions(), nil, f)
		s, _ := r.Graph.Service("default/www")
		require.True(t, s.Ingress)
		require.Empty(t, r.Graph.Edges)
	})
	t.Run("destination by workload", func(t *testing.T) {
		f := flow("www", "auth", true, 100)
		f.DestService, f.DestServiceNamespace = "", ""
		r, _ := build(t, demoInventory(), testOptions(), nil, f)
		require.Equal(t, []meshpolicy.Edge{{From: "default/www", To: "default/auth", Ports: []int{8080}}}, r.Graph.Edges)
	})
	t.Run("excluded source", func(t *testing.T) {
		f := flow("www", "auth", true, 100)
		f.SourceWorkload, f.SourceNamespace, f.SourcePrincipal = "coredns", "kube-system", "cluster.local/ns/kube-system/sa/coredns"
		r, out := build(t, demoInventory(), testOptions(), nil, f)
		require.Empty(t, r.Graph.Edges)
		require.Contains(t, out, "kube-system/coredns -> default/auth: 100 requests")
		require.Contains(t, out, "the source is in an excluded namespace")
	})
	t.Run("unknown destination", func(t *testing.T) {
		f := flow("www", "cache", true, 100)
		r, out := build(t, demoInventory(), testOptions(), nil, f)
		require.Empty(t, r.Graph.Edges)
		require.Contains(t, out, "default/www -> default/cache: 100 requests")
	})
	t.Run("several service accounts", func(t *testing.T) {
		inv := demoInventory()
		inv.Workloads = append(inv.Workloads, Workload{Kind: "StatefulSet", Namespace: "default", Name: "auth-b",
			Labels: map[string]string{"app": "auth"}, ServiceAccount: "auth-b"})
		_, out := build(t, inv, testOptions(), nil, flow("www", "auth", true, 100))
		require.Contains(t, out, "several service accounts (auth, auth-b)")
	})
	t.Run("meshwaf with its own selector", func(t *testing.T) {
		inv := demoInventory()
		inv.Services = append(inv.Services, KService{Namespace: "waf", Name: "meshwaf", Selector: map[string]string{"app.kubernetes.io/name": "meshwaf"},
			Ports: []KPort{{Port: 9100, Name: "grpc", Protocol: "GRPC"}, {Port: 9191, Name: "http-metrics", Protocol: "HTTP"}}})
		inv.Workloads = append(inv.Workloads, Workload{Kind: "Deployment", Namespace: "waf", Name: "meshwaf",
			Labels: map[string]string{"app.kubernetes.io/name": "meshwaf"}, ServiceAccount: "waf"})
		o := testOptions()
		o.MeshwafNamespace = "waf"
		f := flow("batch", "meshwaf", true, 100)
		f.DestServiceNamespace, f.DestNamespace = "waf", "waf"
		r, _ := build(t, inv, o, nil, f, flow("www", "db", true, 100))
		require.Equal(t, meshpolicy.Meshwaf{Namespace: "waf", ServiceAccount: "waf", Selector: map[string]string{"app.kubernetes.io/name": "meshwaf"},
			GRPCPort: 9100, MetricsPort: 9191}, r.Graph.Settings.Meshwaf)
		_, ok := r.Graph.Service("waf/meshwaf")
		require.False(t, ok, "meshwaf is settings, not a service")
		// batch only called meshwaf: no edge, so it is no service either.
		_, ok = r.Graph.Service("default/batch")
		require.False(t, ok)
	})
	t.Run("merge", func(t *testing.T) {
		base, err := meshpolicy.Decode("hand.yaml", []byte(`apiVersion: meshwaf.io/v1alpha1
kind: ServiceGraph
metadata: {name: shop}
spec:
  services:
  - {name: www, ports: [{port: 8080, protocol: HTTP}]}
  - {name: auth, ports: [{port: 8080, protocol: HTTP}]}
  - {name: db, ports: [{port: 8080, protocol: HTTP}]}
  edges:
  - {from: www, to: auth, methods: [GET], paths: ["/login"]}
  - {from: auth, to: db}
`))
		require.NoError(t, err)
		r, out := build(t, demoInventory(), testOptions(), base, flow("www", "auth", true, 100), flow("www", "db", true, 100))
		require.Equal(t, []EdgeKey{{"default/www", "default/db"}}, r.New)
		require.Equal(t, []EdgeKey{{"default/auth", "default/db"}}, r.Vanished)
		require.Equal(t, []string{"/login"}, r.Graph.Edges[0].Paths)
		require.Contains(t, out, "metadata: {name: shop}")
		require.Contains(t, out, "vanished: not observed in the 7d; kept as written in hand.yaml")
		var sum bytes.Buffer
		require.NoError(t, WriteSummary(&sum, r))
		require.Contains(t, sum.String(), "new edge: default/www -> default/db\nvanished edge (kept): default/auth -> default/db\n")
	})
	t.Run("deterministic", func(t *testing.T) {
		flows := []Flow{flow("www", "auth", true, 1200), flow("www", "db", true, 900), flow("batch", "db", true, 30)}
		_, a := build(t, demoInventory(), testOptions(), nil, flows...)
		_, b := build(t, demoInventory(), testOptions(), nil, flows[2], flows[0], flows[1])
		require.Equal(t, a, b)
	})
}
