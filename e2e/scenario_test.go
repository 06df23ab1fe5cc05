package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/e2e/envoy"
)

// The seed scenario: three services (www, auth, db), each behind its own
// sidecar (the Envoy stand-in, mTLS with SPIFFE identities), all sidecars
// asking the real meshwaf binary. A traffic generator in the spirit of
// microsim plays www: mostly normal JSON and HTTP requests to auth and db,
// and with some probability a SQL injection, a cross-site script or a
// directory traversal. The proof: no attack reaches auth or db, no normal
// request is refused, and the generator's counters, the sidecars' counters,
// meshwaf's metrics and its audit lines all agree.

// service is one upstream workload; it records the request ids it served.
type service struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	seen map[string]bool
}

func startService(t *testing.T, name string) *service {
	t.Helper()
	s := &service{name: name, seen: map[string]bool{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.seen[r.Header.Get("X-Request-Id")] = true
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"service":%q,"ok":true}`, name)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *service) served(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

// Kinds of generated requests.
const (
	kindNormalGET  = "normal-get"
	kindNormalJSON = "normal-json"
	kindSQLi       = "sqli"
	kindXSS        = "xss"
	kindTraversal  = "traversal"
)

func isAttack(kind string) bool {
	return kind == kindSQLi || kind == kindXSS || kind == kindTraversal
}

// simRequest builds request i of a kind for the destination's sidecar.
func simRequest(base, dest, kind string, i int) (*http.Request, error) {
	host := dest + ".default.svc.cluster.local"
	var req *http.Request
	var err error
	switch kind {
	case kindNormalGET:
		req, err = http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/users/%d?fields=id,name,email&page=%d", base, 1000+i, i%7), nil)
	case kindNormalJSON:
		body := fmt.Sprintf(`{"user":"user%d@example.com","items":[{"sku":"A-%d","qty":%d}],"note":"please deliver after 5 pm, ring twice"}`, i, 1000+i, 1+i%3)
		req, err = http.NewRequest(http.MethodPost, base+"/api/v1/orders", strings.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	case kindSQLi:
		req, err = http.NewRequest(http.MethodGet, base+"/api/v1/login?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--", nil)
	case kindXSS:
		body := `{"comment":"<script>alert(document.cookie)</script>","user":"joe"}`
		req, err = http.NewRequest(http.MethodPost, base+"/api/v1/comments", strings.NewReader(body))
		if req != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	case kindTraversal:
		req, err = http.NewRequest(http.MethodGet, base+"/api/v1/files?name=..%2F..%2F..%2F..%2Fetc%2Fpasswd", nil)
	}
	if err != nil {
		return nil, err
	}
	req.Host = host + ":8080"
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "microsim/1.0 (www)")
	req.Header.Set("X-Request-Id", fmt.Sprintf("www-%s-%s-%05d", dest, kind, i))
	return req, nil
}

// simStats are the generator's counters per kind, like microsim's stats.
type simStats struct {
	mu                       sync.Mutex
	sent, passed, refused    map[string]int
	reached                  map[string]int // attacks the service saw
	otherStatus              map[string][]int
	refusedIDs, requestKinds map[string]string
}

func newSimStats() *simStats {
	return &simStats{
		sent: map[string]int{}, passed: map[string]int{}, refused: map[string]int{}, reached: map[string]int{},
		otherStatus: map[string][]int{}, refusedIDs: map[string]string{}, requestKinds: map[string]string{},
	}
}

func TestSeedScenario(t *testing.T) {
	t.Parallel()
	p := startServer(t, "--config", writeConfig(t, "auditAllChecks: true\n"))

	mesh, err := envoy.NewMesh("cluster.local")
	require.NoError(t, err)
	identity := func(sa string) tls.Certificate {
		c, err := mesh.Identity("default", sa)
		require.NoError(t, err)
		return c
	}
	services := map[string]*service{}
	sidecars := map[string]*envoy.Proxy{}
	for _, name := range []string{"www", "auth", "db"} {
		services[name] = startService(t, name)
		sc, err := envoy.Start(envoy.Config{
			AuthzAddress:    p.grpcAddr,
			Upstream:        services[name].srv.URL,
			Timeout:         10 * time.Second, // Istio's provider timeout, set explicitly
			WithRequestBody: &envoy.BufferSettings{MaxRequestBytes: 64 << 10},
			TLS:             mesh.ServerTLS(identity(name)),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sc.Close() })
		sidecars[name] = sc
	}
	www := &http.Client{
		Transport: &http.Transport{TLSClientConfig: mesh.ClientTLS(identity("www")), MaxIdleConnsPerHost: 8},
		Timeout:   30 * time.Second,
	}

	// The generator: 600 requests from www, half to auth and half to db,
	// with an attack probability of 0.2 split over the three kinds.
	const n, attackProbability = 600, 0.2
	rng := rand.New(rand.NewPCG(6, 2026))
	type job struct {
		dest, kind string
		i          int
	}
	jobs := make([]job, n)
	for i := range jobs {
		dest := []string{"auth", "db"}[i%2]
		kind := []string{kindNormalGET, kindNormalJSON}[rng.IntN(2)]
		if rng.Float64() < attackProbability {
			kind = []string{kindSQLi, kindXSS, kindTraversal}[rng.IntN(3)]
		}
		jobs[i] = job{dest, kind, i}
	}
	stats := newSimStats()
	work := make(chan job)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				req, err := simRequest(sidecars[j.dest].URL(), j.dest, j.kind, j.i)
				if !assert.NoError(t, err) {
					continue
				}
				id := req.Header.Get("X-Request-Id")
				resp, err := www.Do(req)
				if !assert.NoError(t, err, "%s", id) {
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				key := j.dest + "/" + j.kind
				stats.mu.Lock()
				stats.sent[key]++
				stats.requestKinds[id] = key
				switch resp.StatusCode {
				case http.StatusOK:
					stats.passed[key]++
				case http.StatusForbidden:
					stats.refused[key]++
					stats.refusedIDs[id] = string(body)
				default:
					stats.otherStatus[key] = append(stats.otherStatus[key], resp.StatusCode)
				}
				if isAttack(j.kind) && services[j.dest].served(id) {
					stats.reached[key]++
				}
				stats.mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()

	// The generator's view, microsim style.
	var attacks, normals int
	for _, dest := range []string{"auth", "db"} {
		for _, kind := range []string{kindNormalGET, kindNormalJSON, kindSQLi, kindXSS, kindTraversal} {
			key := dest + "/" + kind
			t.Logf("%-18s sent %3d  passed %3d  refused %3d  attacks reached the service %d",
				key, stats.sent[key], stats.passed[key], stats.refused[key], stats.reached[key])
			assert.Empty(t, stats.otherStatus[key], "%s: statuses other than 200 and 403", key)
			if isAttack(kind) {
				attacks += stats.sent[key]
				assert.Zero(t, stats.reached[key], "%s: attacks reached %s", key, dest)
				assert.Zero(t, stats.passed[key], "%s: attacks passed", key)
				assert.Equal(t, stats.sent[key], stats.refused[key], "%s: every attack refused", key)
			} else {
				normals += stats.sent[key]
				assert.Zero(t, stats.refused[key], "%s: normal requests refused", key)
				assert.Equal(t, stats.sent[key], stats.passed[key], "%s: every normal request passed", key)
			}
			require.NotZero(t, stats.sent[key], "%s: the generator sent none; the scenario proves nothing", key)
		}
	}
	require.Equal(t, n, attacks+normals)
	// No attack id reached any service; every normal one did.
	for id, key := range stats.requestKinds {
		dest, kind, _ := strings.Cut(key, "/")
		assert.Equal(t, !isAttack(kind), services[dest].served(id), "%s (%s) served by %s", id, kind, dest)
		assert.False(t, services["www"].served(id), "www's own sidecar was not called")
	}
	// A refusal carries meshwaf's JSON body naming the request.
	for id, body := range stats.refusedIDs {
		var m map[string]any
		if assert.NoError(t, json.Unmarshal([]byte(body), &m), "denied body %q", body) {
			assert.Equal(t, id, m["request_id"])
		}
	}

	// The sidecars' ext_authz counters.
	var ok, denied int64
	for _, dest := range []string{"auth", "db"} {
		st := sidecars[dest].Stats()
		ok += st.OK
		denied += st.Denied
		assert.Zero(t, st.Error, "%s sidecar: ext_authz errors", dest)
		assert.Equal(t, st.OK, st.Upstream, "%s sidecar: every OK forwarded", dest)
	}
	assert.EqualValues(t, normals, ok, "sidecars: ext_authz ok")
	assert.EqualValues(t, attacks, denied, "sidecars: ext_authz denied")

	// meshwaf's metrics.
	mfs := p.metrics(t)
	allow, _ := metricValue(mfs, "meshwaf_checks_total", map[string]string{"decision": "allow"})
	deny, _ := metricValue(mfs, "meshwaf_checks_total", map[string]string{"decision": "deny"})
	errs, _ := metricValue(mfs, "meshwaf_check_errors_total", nil)
	assert.EqualValues(t, normals, allow, "meshwaf_checks_total{decision=allow}")
	assert.EqualValues(t, attacks, deny, "meshwaf_checks_total{decision=deny}")
	assert.Zero(t, errs, "meshwaf_check_errors_total")

	// meshwaf's audit lines (every check, auditAllChecks).
	waitFor(t, 5*time.Second, "one audit line per check", func() bool { return len(p.auditLines(t)) >= n })
	lines := p.auditLines(t)
	require.Len(t, lines, n)
	for _, l := range lines {
		id, _ := l["request_id"].(string)
		key, known := stats.requestKinds[id]
		if !assert.True(t, known, "audit line for an unknown request %q", id) {
			continue
		}
		dest, kind, _ := strings.Cut(key, "/")
		want := "allow"
		if isAttack(kind) {
			want = "deny"
		}
		assert.Equal(t, want, l["decision"], "%s", id)
		src, _ := l["source"].(map[string]any)
		dst, _ := l["destination"].(map[string]any)
		assert.Equal(t, mesh.SPIFFEID("default", "www"), src["principal"], "%s source principal", id)
		assert.Equal(t, mesh.SPIFFEID("default", dest), dst["principal"], "%s destination principal", id)
		if isAttack(kind) {
			wantRule := map[string]string{kindSQLi: "942", kindXSS: "941", kindTraversal: "930"}[kind]
			assert.Contains(t, fmt.Sprint(l["rules"]), "id:"+wantRule, "%s: no %sxxx rule in %v", id, wantRule, l["rules"])
		}
	}
}

// TestSeedPolicies: the policies generated from the seed graph verify
// against it, and their reachability matrix has auth -> db denied.
func TestSeedPolicies(t *testing.T) {
	t.Parallel()
	root, err := moduleRoot()
	require.NoError(t, err)
	graph := root + "/examples/shop-graph.yaml"
	code, policies, stderr := runMeshwaf(t, nil, "policy", "generate", "-f", graph)
	require.Equal(t, 0, code, "policy generate: %s", stderr)
	file := writeConfig(t, policies)
	code, out, stderr := runMeshwaf(t, nil, "policy", "verify", "--graph", graph, "-f", file)
	require.Equal(t, 0, code, "policy verify: %s%s", out, stderr)
	assert.Contains(t, out, "OK: the policies allow exactly the planned flows")

	// Columns are sources, numbered in the legend; rows are destinations.
	col := map[string]int{}
	cell := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], "[") {
			n := 0
			_, _ = fmt.Sscanf(f[0], "[%d]", &n)
			col[f[1]] = n
		}
		if len(f) > 1 && strings.HasSuffix(f[0], ":8080") {
			cell[f[0]] = f[1:]
		}
	}
	at := func(dst, src string) string {
		row, c := cell[dst], col[src]
		require.True(t, c >= 1 && c <= len(row), "no cell %s <- %s in:\n%s", dst, src, out)
		return row[c-1]
	}
	assert.Equal(t, ".", at("default/db:8080", "default/auth"), "auth -> db must not be allowed")
	assert.Equal(t, "A", at("default/db:8080", "default/www"), "www -> db is allowed")
	assert.Equal(t, "A", at("default/auth:8080", "default/www"), "www -> auth is allowed")
}
