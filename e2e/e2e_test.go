// Package e2e tests the meshwaf binary end to end: it builds cmd/meshwaf
// once, runs `meshwaf serve` on loopback ports and talks to it only through
// its public interfaces — the Envoy ext_authz gRPC API, gRPC health and
// reflection, the admin HTTP endpoints, the audit log on stdout, the
// operational log on stderr, signals and exit codes.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshwaf/meshwaf/internal/checkreq"
)

const authzService = "envoy.service.auth.v3.Authorization"

// requireRuleIDs checks the format of meshwaf_rule_ids: rule ids, ascending
// and without repeats, joined by commas.
func requireRuleIDs(t *testing.T, ids string) []int {
	t.Helper()
	if ids == "" {
		return nil
	}
	var out []int
	for _, s := range strings.Split(ids, ",") {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "meshwaf_rule_ids %q", ids)
		if len(out) > 0 {
			require.Greater(t, n, out[len(out)-1], "meshwaf_rule_ids %q not strictly ascending", ids)
		}
		out = append(out, n)
	}
	return out
}

func TestCheckDeniesSeedSQLi(t *testing.T) {
	t.Parallel()
	p := startServer(t)

	// Envoy sets attributes.request.http.id to its stream id; x-request-id
	// is the request id of the mesh.
	const streamID, requestID = "11393487597445375813", "6f1c1f0e-2b6e-4d0c-9a57-3c3f1b4a8e01"
	resp := p.check(t, sqliCheck(streamID, requestID))

	require.EqualValues(t, codes.PermissionDenied, resp.GetStatus().GetCode(), "status: %v", resp.GetStatus())
	assert.Nil(t, resp.GetOkResponse())
	dr := resp.GetDeniedResponse()
	require.NotNil(t, dr, "denied_response")
	assert.EqualValues(t, http.StatusForbidden, dr.GetStatus().GetCode())

	var ct string
	for _, h := range dr.GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "content-type") {
			ct = h.GetHeader().GetValue()
		}
	}
	assert.Equal(t, "application/json", ct, "denied_response content-type")
	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(dr.GetBody()), &body), "denied body %q is not JSON", dr.GetBody())
	rid, _ := body["request_id"].(string)
	assert.Contains(t, []string{streamID, requestID}, rid, "denied body %s names the request", dr.GetBody())
	for _, echo := range []string{"UNION", "SELECT", "version(", "password", "joe"} {
		assert.NotContains(t, strings.ToUpper(dr.GetBody()), strings.ToUpper(echo), "denied body echoes the request")
	}

	v := verdictOf(t, resp)
	assert.Equal(t, "deny", v.decision)
	assert.GreaterOrEqual(t, v.score, 5.0, "anomaly score")
	assert.Equal(t, "default", v.profile)
	ids := requireRuleIDs(t, v.ruleIDs)
	assert.Contains(t, ids, 942190, "rule ids %q", v.ruleIDs)
	// What the default profile reports for this request (seedSQLiRules):
	// the score is CRS PL1's, two SQLi rules.
	assert.Equal(t, seedSQLiRules, v.ruleIDs)
	assert.Equal(t, 10.0, v.score)
}

func TestCheckAllowsNormal(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)

	t.Run("json body", func(t *testing.T) {
		resp := checkOn(t, conn, cleanCheck("101", "req-normal-1"))
		require.EqualValues(t, codes.OK, resp.GetStatus().GetCode(), "status: %v", resp.GetStatus())
		require.NotNil(t, resp.GetOkResponse(), "ok_response")
		assert.Nil(t, resp.GetDeniedResponse())
		v := verdictOf(t, resp)
		assert.Equal(t, verdict{decision: "allow", score: 0, ruleIDs: "", profile: "default"}, v)
	})

	// The body is inspected: the same request with an injection in a JSON
	// field is denied.
	t.Run("json body with SQLi", func(t *testing.T) {
		req := cleanCheck("102", "req-normal-2")
		h := req.Attributes.Request.Http
		h.Body = `{"customer":"joe@example.com","note":"1' UNION SELECT username, password FROM users--"}`
		h.Headers["content-length"] = strconv.Itoa(len(h.Body))
		h.Size = int64(len(h.Body))
		resp := checkOn(t, conn, req)
		assert.EqualValues(t, codes.PermissionDenied, resp.GetStatus().GetCode())
		v := verdictOf(t, resp)
		assert.Equal(t, "deny", v.decision)
		assert.Contains(t, requireRuleIDs(t, v.ruleIDs), 942100, "libinjection SQLi in the JSON body: %q", v.ruleIDs)
	})

	// pack_as_bytes: Envoy sends the body in raw_body instead of body.
	t.Run("raw_body", func(t *testing.T) {
		for _, tc := range []struct {
			body, decision string
		}{
			{`{"customer":"joe@example.com","qty":3}`, "allow"},
			{`{"customer":"joe@example.com","note":"1' UNION SELECT username, password FROM users--"}`, "deny"},
		} {
			req := cleanCheck("103", "req-normal-3")
			h := req.Attributes.Request.Http
			h.Body, h.RawBody = "", []byte(tc.body)
			h.Headers["content-length"] = strconv.Itoa(len(tc.body))
			h.Size = int64(len(tc.body))
			v := verdictOf(t, checkOn(t, conn, req))
			assert.Equal(t, tc.decision, v.decision, "raw_body %s", tc.body)
		}
	})
}

func TestCheckHTTP2Authority(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)

	h2 := func(host string) *authv3.CheckRequest {
		req := httpCheck{
			streamID:  "201",
			requestID: "req-h2-1",
			path:      "/v1/items?page=2&sort=name",
			host:      host,
			protocol:  "HTTP/2",
			headers:   map[string]string{":authority": "catalog.default.svc.cluster.local:8080"},
		}.request()
		_, hasHost := req.Attributes.Request.Http.Headers["host"]
		require.False(t, hasHost)
		return req
	}
	// Envoy fills attributes.request.http.host from :authority; the second
	// case leaves it empty so that only the pseudo-header carries the host.
	for name, host := range map[string]string{
		"host field set":  "catalog.default.svc.cluster.local:8080",
		"only :authority": "",
	} {
		t.Run(name, func(t *testing.T) {
			resp := checkOn(t, conn, h2(host))
			require.EqualValues(t, codes.OK, resp.GetStatus().GetCode(), "status: %v", resp.GetStatus())
			require.NotNil(t, resp.GetOkResponse())
			v := verdictOf(t, resp)
			assert.Equal(t, "allow", v.decision)
			// 920280 (missing Host) or 920350 (numeric Host) would show up
			// here if :authority were not used as the Host.
			assert.Equal(t, "", v.ruleIDs)
		})
	}

	// encode_raw_headers: header_map with raw_value bytes, original case,
	// and an empty headers map. The XSS sits in Referer only, as raw bytes.
	t.Run("header_map XSS", func(t *testing.T) {
		hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
		req := httpCheck{streamID: "202", protocol: "HTTP/2", path: "/v1/items"}.request()
		h := req.Attributes.Request.Http
		h.Headers = nil
		h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			hv(":authority", "catalog.default.svc.cluster.local:8080"),
			hv(":method", "GET"),
			hv(":path", "/v1/items"),
			hv(":scheme", "http"),
			hv("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
			hv("Accept", "text/html"),
			hv("Referer", `https://evil.example/?q=<script>alert(document.cookie)</script>`),
			hv("x-request-id", "req-h2-xss"),
		}}
		resp := checkOn(t, conn, req)
		require.EqualValues(t, codes.PermissionDenied, resp.GetStatus().GetCode(), "status: %v", resp.GetStatus())
		require.NotNil(t, resp.GetDeniedResponse())
		v := verdictOf(t, resp)
		assert.Equal(t, "deny", v.decision)
		ids := requireRuleIDs(t, v.ruleIDs)
		hasXSS := false
		for _, id := range ids {
			hasXSS = hasXSS || (id >= 941000 && id < 942000)
		}
		assert.True(t, hasXSS, "no XSS rule (941xxx) in %q", v.ruleIDs)
	})
}

func TestNetworkCheck(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      checkreq.Peer(srcAddress, 41234, srcPrincipal),
		Destination: checkreq.Peer(dstAddress, 5432, dstPrincipal),
	}}
	resp := p.check(t, req)
	assert.EqualValues(t, codes.OK, resp.GetStatus().GetCode())
	assert.Nil(t, resp.GetDeniedResponse())
	assert.Empty(t, resp.GetDynamicMetadata().GetFields())

	mfs := p.metrics(t)
	n, found := metricValue(mfs, "meshwaf_network_checks_total", nil)
	require.True(t, found, "meshwaf_network_checks_total missing")
	assert.Equal(t, 1.0, n)
	for _, d := range []string{"allow", "deny", "detect"} {
		n, _ := metricValue(mfs, "meshwaf_checks_total", map[string]string{"decision": d})
		assert.Equal(t, 0.0, n, "meshwaf_checks_total{decision=%q} after a network check", d)
	}
	assert.Empty(t, p.auditLines(t), "a network check writes no audit line")
}

func TestDetectMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{name: "flag", args: []string{"--mode", "detect"}},
		{name: "env", env: []string{"MESHWAF_MODE=detect"}},
		// The flag wins over the environment.
		{name: "flag over env", env: []string{"MESHWAF_MODE=block"}, args: []string{"--mode=detect"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startServerEnv(t, tc.env, tc.args...)
			resp := p.check(t, sqliCheck("301", "req-detect-1"))
			require.EqualValues(t, codes.OK, resp.GetStatus().GetCode(), "status: %v", resp.GetStatus())
			require.NotNil(t, resp.GetOkResponse())
			v := verdictOf(t, resp)
			assert.Equal(t, "detect", v.decision)
			assert.GreaterOrEqual(t, v.score, 5.0)
			assert.Contains(t, requireRuleIDs(t, v.ruleIDs), 942190)

			var mode any
			for _, l := range logLines(t, p.stderr.lines()) {
				if l["msg"] == "rules compiled" {
					mode = l["mode"]
				}
			}
			assert.Equal(t, "detect", mode, "mode in the 'rules compiled' log")
			n, _ := metricValue(p.metrics(t), "meshwaf_checks_total", map[string]string{"decision": "detect", "profile": "default"})
			assert.Equal(t, 1.0, n)
			audit := p.auditLines(t)
			if assert.Len(t, audit, 1) {
				assert.Equal(t, "detect", audit[0]["decision"])
			}
		})
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()

	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", authzService} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err, "health check %q", svc)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, r.GetStatus(), "health of %q", svc)
	}
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "health of an unknown service")

	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := p.httpGet(path)
		assert.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	}
	code, _ := p.httpGet("/nope")
	assert.Equal(t, http.StatusNotFound, code)

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	r, err := stream.Recv()
	require.NoError(t, err)
	require.NoError(t, stream.CloseSend())
	var services []string
	for _, s := range r.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	assert.Subset(t, services, []string{authzService, "grpc.health.v1.Health"})
}

var reIPv4 = regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}\b`)

func TestMetrics(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)
	ids := []string{"401", "req-metrics-deny", "402", "req-metrics-allow"}
	require.EqualValues(t, codes.PermissionDenied, checkOn(t, conn, sqliCheck(ids[0], ids[1])).GetStatus().GetCode())
	require.EqualValues(t, codes.OK, checkOn(t, conn, cleanCheck(ids[2], ids[3])).GetStatus().GetCode())

	mfs := p.metrics(t)
	val := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, found := metricValue(mfs, name, labels)
		require.True(t, found, "no series %s%v", name, labels)
		return v
	}
	assert.Equal(t, 1.0, val("meshwaf_checks_total", map[string]string{"decision": "deny", "profile": "default"}))
	assert.Equal(t, 1.0, val("meshwaf_checks_total", map[string]string{"decision": "allow", "profile": "default"}))
	assert.Equal(t, 0.0, val("meshwaf_checks_total", map[string]string{"decision": "detect", "profile": "default"}))
	assert.EqualValues(t, 2, histogramCount(mfs, "meshwaf_check_duration_seconds", map[string]string{"profile": "default"}))
	assert.EqualValues(t, 2, histogramCount(mfs, "meshwaf_anomaly_score", map[string]string{"profile": "default"}))
	assert.GreaterOrEqual(t, val("meshwaf_rule_matches_total", map[string]string{"rule_id": "942190"}), 1.0)
	assert.Equal(t, 0.0, val("meshwaf_checks_in_flight", nil))
	assert.Equal(t, 0.0, val("meshwaf_network_checks_total", nil))
	assert.Equal(t, 0.0, val("meshwaf_check_errors_total", nil))
	assert.Equal(t, 1.0, val("meshwaf_build_info", nil))

	// Labels stay bounded: nothing taken from the request reaches a label.
	n := 0
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "meshwaf_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				n++
				v := lp.GetValue()
				assert.NotContains(t, v, "/", "%s{%s=%q} looks like a path", name, lp.GetName(), v)
				assert.False(t, reIPv4.MatchString(v), "%s{%s=%q} looks like an IP address", name, lp.GetName(), v)
				assert.NotContains(t, ids, v, "%s{%s=%q} is a request id", name, lp.GetName(), v)
				assert.NotContains(t, v, "spiffe", "%s{%s=%q} is a principal", name, lp.GetName(), v)
			}
		}
	}
	assert.Greater(t, n, 0, "no meshwaf_* labels scanned")
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)

	// 1. The seed SQLi: one audit line.
	const sqliID = "req-audit-sqli"
	require.EqualValues(t, codes.PermissionDenied, checkOn(t, conn, sqliCheck(sqliID, sqliID)).GetStatus().GetCode())
	waitFor(t, 5*time.Second, "the audit line of the SQLi", func() bool { return len(p.stdout.lines()) >= 1 })

	// 2. A clean check: no audit line. 3. An SQLi in a JSON body, with a
	// marker in another field that no rule matches. Lines are written in
	// order, so once the third check's line is there, the second one would
	// be too.
	const cleanID, bodyID = "req-audit-clean", "req-audit-body"
	require.EqualValues(t, codes.OK, checkOn(t, conn, cleanCheck(cleanID, cleanID)).GetStatus().GetCode())
	const marker = "zebra-kumquat-7QX2-harpsichord-meander-0451"
	attack := cleanCheck(bodyID, bodyID)
	h := attack.Attributes.Request.Http
	h.Body = `{"comment":"1' UNION SELECT username, password FROM users--","memo":"` + marker + `"}`
	h.Headers["content-length"] = strconv.Itoa(len(h.Body))
	require.EqualValues(t, codes.PermissionDenied, checkOn(t, conn, attack).GetStatus().GetCode())
	waitFor(t, 5*time.Second, "the audit line of the body SQLi", func() bool { return len(p.stdout.lines()) >= 2 })

	lines := p.stdout.lines()
	require.Len(t, lines, 2, "stdout:\n%s", p.stdout.String())
	all := logLines(t, lines)
	for _, l := range all {
		assert.Equal(t, "audit", l["log_type"])
	}
	first, third := all[0], all[1]

	assert.Equal(t, sqliID, first["request_id"])
	assert.Equal(t, "deny", first["decision"])
	assert.Equal(t, "GET", first["method"])
	assert.Equal(t, "/?username=[redacted 17 bytes]&password=[redacted 48 bytes]", first["path"], "query values are masked")
	assert.NotContains(t, lines[0], "joe%40example.com", "the audit line carries a query value")
	assert.Equal(t, "db.default.svc.cluster.local:8080", first["host"])
	assert.EqualValues(t, 403, first["status"])
	assert.EqualValues(t, 10, first["anomaly_score"])
	assert.Equal(t, "default", first["profile"])
	src, _ := first["source"].(map[string]any)
	dst, _ := first["destination"].(map[string]any)
	assert.Equal(t, srcPrincipal, src["principal"])
	assert.Equal(t, srcAddress, src["address"])
	assert.Equal(t, dstPrincipal, dst["principal"])
	assert.Equal(t, dstAddress, dst["address"])
	rules, _ := first["rules"].([]any)
	var ruleIDs []string
	for _, r := range rules {
		m, _ := r.(map[string]any)
		id, _ := m["id"].(float64)
		ruleIDs = append(ruleIDs, strconv.Itoa(int(id)))
		assert.NotEmpty(t, m["msg"], "rule %v has no msg", m)
	}
	assert.Equal(t, seedSQLiRules, strings.Join(ruleIDs, ","))

	assert.Equal(t, bodyID, third["request_id"])
	assert.Equal(t, "deny", third["decision"])
	assert.Equal(t, "POST", third["method"])
	assert.NotContains(t, third, "body")
	assert.NotContains(t, lines[1], marker, "the audit line carries the request body")
	assert.NotContains(t, p.stdout.String(), cleanID, "a clean check was audited")
	assert.NotContains(t, p.stderr.String(), marker, "the operational log carries the request body")
	// Header values are not logged either.
	assert.NotContains(t, p.stdout.String(), "Firefox/128.0", "the audit log carries header values")
}

// slowBody is a JSON body of ~100 KiB with 850 leaf values of prose: an
// inspection of it takes tens of milliseconds of CPU.
func slowBody() string {
	var b strings.Builder
	b.WriteString(`{"records":{`)
	for i := range 850 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"f%04d":"lorem %04d ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore"`, i, i)
	}
	b.WriteString(`}}`)
	return b.String()
}

func slowCheck(i int, body string) *authv3.CheckRequest {
	id := fmt.Sprintf("req-slow-%d", i)
	return httpCheck{
		streamID:  strconv.Itoa(900 + i),
		requestID: id,
		method:    http.MethodPost,
		path:      "/api/v1/import",
		headers:   map[string]string{"content-type": "application/json"},
		body:      body,
	}.request()
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "meshwaf.yaml")
	require.NoError(t, os.WriteFile(f, []byte(yaml), 0o600))
	return f
}

// TestSIGTERMDrain: on SIGTERM, checks in flight are answered, new
// connections are refused, and the process exits 0.
func TestSIGTERMDrain(t *testing.T) {
	t.Parallel()
	// maxInFlight 1 runs the checks one at a time; the others wait for
	// admission, and a waiting check counts in meshwaf_checks_in_flight.
	// SIGTERM is sent once half of them are in flight: at least n/2-1 of
	// them are then still queued behind a running inspection, whatever the
	// machine's speed, so the drain has work to wait for.
	const n = 16
	p := startServer(t, "--config", writeConfig(t, "shutdownTimeout: 40s\nmaxInFlight: 1\nmaxStreams: 32\nqueueWait: 30s\n"))
	conn := p.dial(t)
	client := authv3.NewAuthorizationClient(conn)

	type result struct {
		resp *authv3.CheckResponse
		err  error
		at   time.Time
	}
	body := slowBody()
	results := make(chan result, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			resp, err := client.Check(ctx, slowCheck(i, body))
			results <- result{resp, err, time.Now()}
		}()
	}
	waitFor(t, 10*time.Second, "half the checks in flight", func() bool {
		v, _ := metricValue(p.metrics(t), "meshwaf_checks_in_flight", nil)
		return v >= n/2
	})
	sent := p.sigterm(t)

	waitFor(t, 5*time.Second, `"draining" in the log`, func() bool { return p.hasLogMessage(t, "draining") })
	// A new check is refused once the server stops accepting: poll, as the
	// listener closes just after the log line.
	var newErr error
	waitFor(t, 5*time.Second, "a new check to fail", func() bool {
		c, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, newErr = authv3.NewAuthorizationClient(c).Check(ctx, cleanCheck("999", "req-after-sigterm"))
		return newErr != nil
	})
	assert.Equal(t, codes.Unavailable, status.Code(newErr), "new check after SIGTERM: %v", newErr)

	afterSigterm := 0
	for range n {
		var r result
		select {
		case r = <-results:
		case <-time.After(45 * time.Second):
			t.Fatal("a check in flight was never answered")
		}
		if !assert.NoError(t, r.err, "check in flight at SIGTERM") {
			continue
		}
		assert.EqualValues(t, codes.OK, r.resp.GetStatus().GetCode())
		assert.NotNil(t, r.resp.GetOkResponse())
		assert.Equal(t, "allow", verdictOf(t, r.resp).decision)
		if r.at.After(sent) {
			afterSigterm++
		}
	}
	require.GreaterOrEqual(t, afterSigterm, n/2-1, "fewer checks than were queued at SIGTERM were answered after it: the drain was not exercised")
	t.Logf("%d of %d checks were answered after SIGTERM", afterSigterm, n)

	code := p.waitExit(t, 45*time.Second)
	assert.Equal(t, 0, code, "exit code")
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	msgs := p.logMessages(t)
	assert.Contains(t, msgs, "draining")
	assert.Contains(t, msgs, "stopped")
	assert.NotContains(t, msgs, "drain timed out; closing connections")
}

// TestSIGTERMDrainDelay: with drainDelay, the server reports NOT_SERVING
// (gRPC health, /readyz) for that long while still answering checks, then
// stops.
func TestSIGTERMDrainDelay(t *testing.T) {
	t.Parallel()
	const drainDelay = 2 * time.Second
	p := startServer(t, "--config", writeConfig(t, "drainDelay: 2s\nshutdownTimeout: 10s\n"))
	conn := p.dial(t)
	hc := healthpb.NewHealthClient(conn)

	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: authzService})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())
	updates := make(chan healthpb.HealthCheckResponse_ServingStatus, 4)
	go func() {
		for {
			r, err := watch.Recv()
			if err != nil {
				close(updates)
				return
			}
			updates <- r.GetStatus()
		}
	}()

	sent := p.sigterm(t)
	select {
	case st := <-updates:
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, st, "health Watch after SIGTERM")
	case <-time.After(drainDelay):
		t.Fatal("health Watch saw no update within the drain delay")
	}

	// Inside the drain window.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, svc := range []string{"", authzService} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if assert.NoError(t, err) {
			assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, r.GetStatus(), "health of %q while draining", svc)
		}
	}
	code, _ := p.httpGet("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "/readyz while draining")
	code, _ = p.httpGet("/healthz")
	assert.Equal(t, http.StatusOK, code, "/healthz while draining")
	// Envoy keeps sending checks until it has seen NOT_SERVING; the server
	// still answers them, on old and new connections.
	resp := checkOn(t, conn, sqliCheck("501", "req-drain-window-1"))
	assert.Equal(t, "deny", verdictOf(t, resp).decision)
	resp = p.check(t, cleanCheck("502", "req-drain-window-2"))
	assert.Equal(t, "allow", verdictOf(t, resp).decision)
	inWindow := time.Since(sent)
	require.Less(t, inWindow, drainDelay, "the checks above did not all run inside the drain window")
	t.Logf("drain-window checks done %v after SIGTERM", inWindow.Round(time.Millisecond))

	// A well-behaved watcher hangs up once it has seen NOT_SERVING.
	wcancel()
	code = p.waitExit(t, 10*time.Second)
	took := time.Since(sent)
	assert.Equal(t, 0, code, "exit code")
	assert.GreaterOrEqual(t, took, drainDelay, "exited before the drain delay was over")
	t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))

	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, cleanCheck("503", "req-after-exit"))
	assert.Equal(t, codes.Unavailable, status.Code(err), "check after exit: %v", err)
	msgs := p.logMessages(t)
	assert.Contains(t, msgs, "draining")
	assert.Contains(t, msgs, "stopped")
}

// TestSIGTERMWithOpenHealthWatch: a client that keeps a health Watch stream
// open (grpc-go clients with client-side health checking do) must not hold
// the shutdown up until shutdownTimeout.
func TestSIGTERMWithOpenHealthWatch(t *testing.T) {
	t.Parallel()
	p := startServer(t, "--config", writeConfig(t, "shutdownTimeout: 6s\n"))
	conn := p.dial(t)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{Service: ""})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())

	sent := p.sigterm(t)
	r, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, r.GetStatus())

	const limit = 3 * time.Second // well below shutdownTimeout
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Errorf("still running %v after SIGTERM while a health Watch stream is open (shutdownTimeout 6s): "+
			"GracefulStop waits for the stream, which the health server never ends", limit)
	}
	wcancel() // unblocks the shutdown if it is still waiting for the stream
	code := p.waitExit(t, 10*time.Second)
	assert.Equal(t, 0, code)
	t.Logf("exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	assert.NotContains(t, p.logMessages(t), "drain timed out; closing connections")
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		want []string // substrings of stderr, besides the file name
	}{
		{"unknown_key.yaml", []string{":2:", "grpcAdress", "unknown key"}},
		{"paranoia_level.yaml", []string{":3:", "defaultProfile.paranoiaLevel", "between 1 and 4"}},
		{"bad_rule.yaml", []string{`profile "default"`, "compiling rules"}},
		{"profile_fields.yaml", []string{":3: defaultProfile.mode", ":4: defaultProfile.denyStatus"}},
		// The package documents that a wrong-type value or an invalid
		// setting names the file, the line and the field.
		{"bad_duration.yaml", []string{":3:", "drainDelay", "soon"}},
		{"wrong_type.yaml", []string{":2:", "failureStatus", "forbidden"}},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".yaml"), func(t *testing.T) {
			t.Parallel()
			path, err := filepath.Abs(filepath.Join("testdata", "config", tc.file))
			require.NoError(t, err)
			code, stdout, stderr := runMeshwaf(t, nil, "serve", "--config", path,
				"--grpc-address", freePort(t), "--admin-address", freePort(t))
			assert.Equal(t, 2, code, "exit code; stderr:\n%s", stderr)
			assert.Empty(t, stdout)
			if tc.file != "bad_rule.yaml" {
				assert.Contains(t, stderr, path, "stderr names the file")
			}
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.NotContains(t, stderr, `"msg":"serving"`, "served with a bad config")
		})
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"mode flag", nil, []string{"--mode", "blok"}, `mode: "blok"`},
		{"paranoia env", []string{"MESHWAF_PARANOIA_LEVEL=high"}, nil, "MESHWAF_PARANOIA_LEVEL"},
		{"log level", nil, []string{"--log-level", "loud"}, "log level"},
		{"missing config", nil, []string{"--config", "testdata/config/does-not-exist.yaml"}, "does-not-exist.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"serve", "--grpc-address", freePort(t), "--admin-address", freePort(t)}, tc.args...)
			code, _, stderr := runMeshwaf(t, tc.env, args...)
			assert.Equal(t, 2, code, "exit code; stderr:\n%s", stderr)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// runMeshwaf runs the binary to completion (bounded by 30 s).
func runMeshwaf(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = cleanEnv(env)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "meshwaf %v did not exit", args)
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("running meshwaf: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// invalidUTF8Check is a request whose header value and body hold bytes that
// are not UTF-8, as Envoy copies them from the wire, plus an SQLi in the
// body. protobuf-go refuses to marshal it, so its wire form is patched.
func invalidUTF8Check(t *testing.T) checkreq.Raw {
	t.Helper()
	hdr := "caf\xe9 \xff\xfe latin-1"
	body := "name=caf\xe9+au+lait&q=%27+UNION+SELECT+username%2C+password+FROM+users--&x=\xc3\x28\xff"
	req := httpCheck{
		streamID:  "601",
		requestID: "req-utf8",
		method:    http.MethodPost,
		path:      "/search",
		headers: map[string]string{
			"content-type": "application/x-www-form-urlencoded",
			"x-legacy":     placeholder("HDR", hdr),
		},
		body: placeholder("BODY", body),
	}.request()
	_, err := proto.Marshal(func() *authv3.CheckRequest {
		c := proto.Clone(req).(*authv3.CheckRequest)
		c.Attributes.Request.Http.Body = body
		return c
	}())
	require.Error(t, err, "protobuf-go marshals invalid UTF-8 now; the wire patching is not needed")
	wire, err := wireWithBytes(req, map[string]string{placeholder("HDR", hdr): hdr, placeholder("BODY", body): body})
	require.NoError(t, err)
	return wire
}

func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	conn := p.dial(t)

	t.Run("invalid UTF-8 in header and body", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		var resp authv3.CheckResponse
		err := conn.Invoke(ctx, checkreq.Method, invalidUTF8Check(t), &resp, grpc.ForceCodecV2(checkreq.Codec{}))
		require.NoError(t, err)
		v := verdictOf(t, &resp)
		// The body was inspected despite the bytes: the SQLi is found.
		assert.Equal(t, "deny", v.decision)
		assert.Contains(t, requireRuleIDs(t, v.ruleIDs), 942100, "rule ids %q", v.ruleIDs)
		assert.EqualValues(t, codes.PermissionDenied, resp.GetStatus().GetCode())
		assert.True(t, json.Valid([]byte(resp.GetDeniedResponse().GetBody())), "denied body %q", resp.GetDeniedResponse().GetBody())
		n, _ := metricValue(p.metrics(t), "meshwaf_lenient_decodes_total", nil)
		assert.Equal(t, 1.0, n, "meshwaf_lenient_decodes_total")
	})

	// The default body limit is 1 MiB, so gRPC accepts messages up to 4 MiB:
	// a 3 MiB body arrives, is inspected in part, and is denied for that.
	t.Run("body over the inspection limit", func(t *testing.T) {
		big := `{"data":"` + strings.Repeat("a", 3<<20) + `"}`
		req := cleanCheck("602", "req-3mib")
		h := req.Attributes.Request.Http
		h.Body = big
		h.Headers["content-length"] = strconv.Itoa(len(big))
		resp := checkOn(t, conn, req)
		v := verdictOf(t, resp)
		assert.Equal(t, "deny", v.decision)
		assert.Contains(t, requireRuleIDs(t, v.ruleIDs), 99002, "rule ids %q", v.ruleIDs)
		assert.EqualValues(t, http.StatusForbidden, resp.GetDeniedResponse().GetStatus().GetCode())
	})

	// A CheckRequest over the gRPC limit is refused by gRPC itself, before
	// Check runs: the client gets RESOURCE_EXHAUSTED, and Envoy then applies
	// its own failure_mode_allow setting. Expected; Envoy's
	// with_request_body.max_request_bytes must stay below the limit.
	t.Run("message over the gRPC limit", func(t *testing.T) {
		req := cleanCheck("603", "req-6mib")
		req.Attributes.Request.Http.Body = strings.Repeat("a", 6<<20)
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		_, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "error: %v", err)
		// The server is still fine.
		assert.Equal(t, "allow", verdictOf(t, checkOn(t, conn, cleanCheck("604", "req-after-6mib"))).decision)
	})
}

// TestRequestIDIsXRequestID: Envoy fills attributes.request.http.id with its
// internal stream id, a number nobody else sees; the request id the mesh
// logs and propagates is x-request-id. The denial body and the audit line
// must carry the latter, or a denied request cannot be correlated with
// Envoy's access log or the client's report.
func TestRequestIDIsXRequestID(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	const streamID, requestID = "14083216410327895713", "0b0c7e55-0d4a-4f0b-8e0e-3f1d2a9c6b77"
	resp := p.check(t, sqliCheck(streamID, requestID))
	require.NotNil(t, resp.GetDeniedResponse())
	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body))
	assert.Equal(t, requestID, body["request_id"], "request_id of the denied body")

	waitFor(t, 5*time.Second, "the audit line", func() bool { return len(p.auditLines(t)) >= 1 })
	assert.Equal(t, requestID, p.auditLines(t)[0]["request_id"], "request_id of the audit line")
}

// TestReadOnlyFilesystem runs the shipped binary with no writable temp dir,
// as under readOnlyRootFilesystem without volumes: it must start, and a
// multipart upload with a file part must be inspected in memory (stock
// Coraza would write the part to a temp file and fail strict validation).
func TestReadOnlyFilesystem(t *testing.T) {
	t.Parallel()
	p := startServerEnv(t, []string{"TMPDIR=/nonexistent/meshwaf-tmp"})
	body := "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"beach.txt\"\r\nContent-Type: text/plain\r\n\r\nsand and sea\r\n" +
		"--XyZ--\r\n"
	upload := httpCheck{
		requestID: "ro-1", method: http.MethodPost, path: "/api/v1/photos", host: "media:8080",
		headers: map[string]string{"content-type": "multipart/form-data; boundary=XyZ"}, body: body,
	}
	v := verdictOf(t, p.check(t, upload.request()))
	require.Equal(t, "allow", v.decision, "rules: %s", v.ruleIDs)

	attack := upload
	attack.requestID = "ro-2"
	attack.body = strings.Replace(body, "holiday", "1' UNION SELECT password FROM users--", 1)
	v = verdictOf(t, p.check(t, attack.request()))
	require.Equal(t, "deny", v.decision)
}
