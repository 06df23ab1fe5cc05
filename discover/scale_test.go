package discover

import (
	"fmt"
	"io"
	"testing"
	"time"
)

// BenchmarkBuildWrite: the pure part of discover (Build, Graph, Write with
// its validating decode) over 10,000 services and 100,000 flows.
func BenchmarkBuildWrite(b *testing.B) {
	const services, per = 10000, 10
	inv := &Inventory{ServiceAccounts: map[string]bool{}}
	name := func(i int) (string, string) { return fmt.Sprintf("scale-%03d", i/100), fmt.Sprintf("svc-%05d", i) }
	for i := 0; i < services; i++ {
		ns, n := name(i)
		inv.Services = append(inv.Services, KService{Namespace: ns, Name: n, Selector: map[string]string{"app": n},
			Ports: []KPort{{Port: 8080, Name: "http", Protocol: "HTTP", From: "port name http"}}})
		inv.Workloads = append(inv.Workloads, Workload{Kind: "Deployment", Namespace: ns, Name: n, Labels: map[string]string{"app": n}, ServiceAccount: n})
		inv.ServiceAccounts[ns+"/"+n] = true
	}
	inv.sort()
	var flows []Flow
	for i := 0; i < services; i++ {
		sns, src := name(i)
		for j := 0; j < per; j++ {
			dns, dst := name((i + 1 + j*1007) % services)
			flows = append(flows, Flow{FlowKey: FlowKey{SourceWorkload: src, SourceNamespace: sns, SourcePrincipal: "cluster.local/ns/" + sns + "/sa/" + src,
				DestWorkload: dst, DestNamespace: dns, DestService: dst, DestServiceNamespace: dns, Security: "mutual_tls"},
				Requests: 100, First: at.Add(-time.Hour), Last: at})
		}
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		d := Build(inv, flows, testOptions())
		t1 := time.Since(start)
		r := d.Graph(nil, "")
		t2 := time.Since(start)
		if err := Write(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		b.Logf("build %s, graph %s, write %s", t1, t2-t1, time.Since(start)-t2)
	}
}
