package istiotest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"istio.io/istio/pkg/config/mesh"
)

// `policy verify` on the request-set fixtures (istio/testdata/requests)
// against Istio: the policies go through Istio's xDS generation, and the
// RBAC on api's inbound mTLS chain is evaluated on probe requests. verify
// says OK exactly when Istio admits www the graph's requests (GET or POST
// on /admin/users and /x,y) and no other probe, and the request it gives
// as an example of a difference is one where Istio and the graph differ.
func TestVerifyRequestsAgainstIstio(t *testing.T) {
	const dir = "istio/testdata/requests"
	graphFile := filepath.Join(dir, "graph.yaml")
	ws := []workload{
		{name: "www", namespace: "shop", serviceAccount: "www", labels: map[string]string{"app": "www"}, ip: "10.10.2.10", ports: []int32{8080}},
		{name: "api", namespace: "shop", serviceAccount: "api", labels: map[string]string{"app": "api"}, ip: "10.10.2.11", ports: []int32{8080}},
	}
	const www = "spiffe://cluster.local/ns/shop/sa/www"
	planned := func(method, path string) bool {
		return slices.Contains([]string{"GET", "POST"}, method) && slices.Contains([]string{"/admin/users", "/x,y"}, path)
	}
	example := regexp.MustCompile(`\(e\.g\. (\S+) ("(?:[^"\\]|\\.)*"): (allowed, not planned|planned, denied)\)`)
	for _, fixture := range []string{"comma-split", "widened-prefix", "dropped-method", "extra-path", "identical", "equivalent"} {
		t.Run(fixture, func(t *testing.T) {
			file := filepath.Join(dir, fixture+".yaml")
			out := meshwafVerify(t, "policy", "verify", "--graph", graphFile, "-f", file, "--matrix", "never")
			verifyOK := strings.Contains(out, "OK: the policies allow exactly the planned flows\n")

			data, err := os.ReadFile(filepath.Join(env.repo, file))
			if err != nil {
				t.Fatal(err)
			}
			cfgs, _ := istioConfigs(t, file, string(data))
			s := newServer(t, cfgs, kubeObjects(ws), mesh.DefaultMeshConfig())
			var chains []rbacFilters
			for _, fc := range inboundChains(t, s.Listeners(proxy(s, ws[1]))) {
				if !isBlackhole(fc) && fc.GetFilterChainMatch().GetDestinationPort().GetValue() == 8080 &&
					fc.GetFilterChainMatch().GetTransportProtocol() == "tls" {
					chains = append(chains, chainRBAC(t, fc))
				}
			}
			if len(chains) == 0 {
				t.Fatal("api:8080: no inbound mTLS chain")
			}
			istio := func(method, path string) bool {
				allowed := true
				for _, c := range chains {
					ok, err := rbacAllows(c.rules, rbacRequest{principal: www, port: 8080, method: method, path: path})
					if err != nil {
						t.Fatal(err)
					}
					allowed = allowed && ok
				}
				return allowed
			}
			istioSame := true
			for _, m := range []string{"GET", "POST", "PUT"} {
				for _, p := range []string{"/admin/users", "/x,y", "/x", "y", "/admin/z", "/debug", "/z"} {
					istioSame = istioSame && istio(m, p) == planned(m, p)
				}
			}
			if verifyOK != istioSame {
				t.Fatalf("policy verify OK=%v, Istio admits exactly the planned requests=%v; verify said:\n%s", verifyOK, istioSame, out)
			}
			if verifyOK {
				return
			}
			m := example.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no example request in:\n%s", out)
			}
			path, err := strconv.Unquote(m[2])
			if err != nil {
				t.Fatal(err)
			}
			if got := istio(m[1], path); got == planned(m[1], path) || got != (m[3] == "allowed, not planned") {
				t.Errorf("example %s %q (%s): Istio allows=%v, planned=%v", m[1], path, m[3], got, planned(m[1], path))
			}
		})
	}
}
