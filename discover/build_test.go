package discover

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

var at = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func testOptions() Options {
	return Options{Name: "discovered", TrustDomain: "cluster.local", MinRequests: 10, Lookback: 7 * 24 * time.Hour, At: at, Step: time.Hour,
		ExcludeNamespaces: []string{"kube-system", "istio-system"}, MeshwafNamespace: "meshwaf-system", MeshwafService: "meshwaf",
		IngressPrincipal: "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
		IngressLabel:     [2]string{"istio", "ingressgateway"}, OptInLabel: [2]string{"meshwaf.io/inspect", "enabled"}}
}

func demoInventory() *Inventory {
	inv := &Inventory{ServiceAccounts: map[string]bool{}}
	for _, n := range []string{"www", "auth", "db"} {
		inv.Services = append(inv.Services, KService{Namespace: "default", Name: n, Selector: map[string]string{"app": n},
			Ports: []KPort{{Port: 8080, Name: "http", Protocol: "HTTP", From: "port name http"}}})
		inv.Workloads = append(inv.Workloads, Workload{Kind: "Deployment", Namespace: "default", Name: n,
			Labels: map[string]string{"app": n, "meshwaf.io/inspect": "enabled"}, ServiceAccount: n})
		inv.ServiceAccounts["default/"+n] = true
	}
	inv.Workloads = append(inv.Workloads, Workload{Kind: "Deployment", Namespace: "default", Name: "batch",
		Labels: map[string]string{"app": "batch"}, ServiceAccount: "batch"})
	inv.sort()
	return inv
}

func flow(src, dst string, secure bool, req int64) Flow {
	f := Flow{FlowKey: FlowKey{SourceWorkload: src, SourceNamespace: "default", DestWorkload: dst, DestNamespace: "default",
		DestService: dst, DestServiceNamespace: "default", DestPrincipal: "cluster.local/ns/default/sa/" + dst, Security: "none"},
		Requests: req, First: at.Add(-48 * time.Hour), Last: at.Add(-time.Hour)}
	if secure {
		f.SourcePrincipal = "cluster.local/ns/default/sa/" + src
		f.Security = "mutual_tls"
	}
	return f
}

func TestBuildDemo(t *testing.T) {
	flows := []Flow{flow("www", "auth", true, 1200), flow("www", "db", true, 900), flow("batch", "db", true, 3), flow("legacy", "db", false, 50)}
	r := Build(demoInventory(), flows, testOptions()).Graph(nil, "")
	var b bytes.Buffer
	require.NoError(t, Write(&b, r))
	t.Log("\n" + b.String())
	g, err := meshpolicy.Decode("out", b.Bytes())
	require.NoError(t, err)
	require.Len(t, g.Edges, 2)
	require.Len(t, r.Below, 1)
	require.Len(t, r.Plaintext, 1)
	require.True(t, strings.Contains(b.String(), "legacy"))
}
