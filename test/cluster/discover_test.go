package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/test/cluster/promtest"
)

var update = flag.Bool("update", false, "rewrite the golden files of the discover tests")

// discoverAt is the end of the tests' lookback: the series lie in the week
// before it, so golden files do not depend on the day they run.
var discoverAt = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// istioFlow is one source→destination pair as the destination's sidecar
// reports it.
type istioFlow struct {
	src, srcNS, srcSA string // srcSA "" is a plaintext caller
	dst, dstNS        string
	dstService        string // destination_service_name; "" for the workload's name
	tcp               bool   // istio_tcp_connections_opened_total, not requests
	// perStep is the counter's increase every 5 minutes from start to end
	// (offsets before discoverAt); total, when set, replaces it: that
	// many single increments spread over the span.
	perStep    float64
	total      int
	start, end time.Duration
}

// demoFlows: the demo's www→auth and www→db (with TCP connections too),
// the ingress gateway calling www, the sidecars calling meshwaf, a
// low-volume batch job calling db and a plaintext caller of auth.
func demoFlows() []istioFlow {
	day := 24 * time.Hour
	return []istioFlow{
		{src: "istio-ingressgateway", srcNS: "istio-system", srcSA: "istio-ingressgateway-service-account", dst: "www", dstNS: "default", perStep: 30, start: 6 * day, end: 0},
		{src: "www", srcNS: "default", srcSA: "www", dst: "auth", dstNS: "default", perStep: 300, start: 6 * day, end: 0},
		{src: "www", srcNS: "default", srcSA: "www", dst: "db", dstNS: "default", perStep: 280, start: 5 * day, end: time.Hour},
		{src: "www", srcNS: "default", srcSA: "www", dst: "db", dstNS: "default", tcp: true, perStep: 2, start: 5 * day, end: time.Hour},
		{src: "www", srcNS: "default", srcSA: "www", dst: "meshwaf", dstNS: "meshwaf-system", perStep: 300, start: 6 * day, end: 0},
		{src: "auth", srcNS: "default", srcSA: "auth", dst: "meshwaf", dstNS: "meshwaf-system", perStep: 300, start: 6 * day, end: 0},
		{src: "db", srcNS: "default", srcSA: "db", dst: "meshwaf", dstNS: "meshwaf-system", perStep: 280, start: 5 * day, end: time.Hour},
		{src: "batch", srcNS: "default", srcSA: "batch", dst: "db", dstNS: "default", total: 3, start: 3 * day, end: 2 * day},
		{src: "legacy", srcNS: "default", dst: "auth", dstNS: "default", perStep: 1, start: 2 * day, end: day},
	}
}

// writeIstio writes each flow's series as Istio's standard metrics name
// them (two response codes per request flow, so discover must sum).
func writeIstio(w *promtest.Writer, flows []istioFlow, at time.Time) {
	const step = 5 * time.Minute
	for _, tcp := range []bool{false, true} {
		for _, f := range flows {
			if f.tcp != tcp {
				continue
			}
			l := promtest.Labels{
				"reporter": "destination", "source_workload": f.src, "source_workload_namespace": f.srcNS,
				"source_app": f.src, "source_principal": "unknown", "connection_security_policy": "none",
				"destination_workload": f.dst, "destination_workload_namespace": f.dstNS, "destination_app": f.dst,
				"destination_principal": "spiffe://cluster.local/ns/" + f.dstNS + "/sa/" + f.dst,
				"destination_service":   f.dst + "." + f.dstNS + ".svc.cluster.local", "destination_service_name": f.dst,
				"destination_service_namespace": f.dstNS, "destination_canonical_service": f.dst,
			}
			if f.srcSA != "" {
				l["source_principal"] = "spiffe://cluster.local/ns/" + f.srcNS + "/sa/" + f.srcSA
				l["connection_security_policy"] = "mutual_tls"
			}
			n := int((f.start - f.end) / step)
			series := func(share float64, extra promtest.Labels) []promtest.Sample {
				out := make([]promtest.Sample, 0, n+1)
				v := 0.0
				for i := 0; i <= n; i++ {
					t := at.Add(-f.start + time.Duration(i)*step)
					if i > 0 {
						if f.total > 0 {
							if i%(n/f.total) == 0 && v < float64(f.total) {
								v++
							}
						} else {
							v += f.perStep * share
						}
					}
					out = append(out, promtest.Sample{T: t, Value: v})
				}
				return out
			}
			if tcp {
				l["request_protocol"] = "tcp"
				w.Counter("istio_tcp_connections_opened", l, series(1, nil))
				continue
			}
			l["request_protocol"] = "http"
			ok, failed := copyLabels(l), copyLabels(l)
			ok["response_code"], failed["response_code"] = "200", "503"
			w.Counter("istio_requests", ok, series(1, nil))
			if f.total == 0 {
				w.Counter("istio_requests", failed, series(0, nil)) // a series that never increases
			}
		}
	}
}

func copyLabels(l promtest.Labels) promtest.Labels {
	out := promtest.Labels{}
	for k, v := range l {
		out[k] = v
	}
	return out
}

// startIstioPrometheus serves flows from a real Prometheus until the test
// ends.
func startIstioPrometheus(t *testing.T, flows []istioFlow) *promtest.Server {
	t.Helper()
	var b strings.Builder
	w := promtest.NewWriter(&b)
	writeIstio(w, flows, discoverAt)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return servePrometheus(t, b.String())
}

// startPrometheus serves the OpenMetrics text from a real Prometheus until
// the test ends and returns its base URL.
func startPrometheus(t *testing.T, openMetrics string) string {
	t.Helper()
	return servePrometheus(t, openMetrics).URL
}

// servePrometheus backfills a TSDB from the OpenMetrics text (promtool tsdb
// create-blocks-from openmetrics), serves it with prometheus and stops it
// when the test ends.
func servePrometheus(t *testing.T, openMetrics string) *promtest.Server {
	t.Helper()
	tl, err := promtest.ToolsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	om := filepath.Join(dir, "series.om")
	if err := os.WriteFile(om, []byte(openMetrics), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv, err := promtest.Start(ctx, tl, dir, om)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("prometheus: %v\n%s", err, srv.LogTail())
		}
	})
	return srv
}

// discover runs the built `meshwaf graph discover` against the API server
// and returns its exit code, stdout and stderr.
func discover(t *testing.T, promURL string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append([]string{"graph", "discover", "--prometheus", promURL, "--kubeconfig", env.cluster.kubeconfig,
		"--at", discoverAt.Format(time.RFC3339), "--namespace", "default"}, args...)
	stdout, stderr, err := run(ctx, env.repo, env.meshwaf, args...)
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(stdout), string(stderr)
}

// checkGolden compares got with testdata/discover/name (-update rewrites).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "discover", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (rerun with -update to see the diff in git):\n%s", path, got)
	}
}

// graphEdges are a graph file's edges as "from -> to ports", sorted.
func graphEdges(t *testing.T, data []byte) []string {
	t.Helper()
	var g struct {
		Spec struct {
			Services []struct {
				Name    string `json:"name"`
				Ingress bool   `json:"ingress"`
				Inspect bool   `json:"inspect"`
			} `json:"services"`
			Edges []struct {
				From    string   `json:"from"`
				To      string   `json:"to"`
				Ports   []int    `json:"ports"`
				Methods []string `json:"methods"`
			} `json:"edges"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range g.Spec.Edges {
		out = append(out, fmt.Sprintf("%s -> %s %v%s", e.From, e.To, e.Ports, strings.Join(e.Methods, ",")))
	}
	for _, s := range g.Spec.Services {
		if s.Ingress {
			out = append(out, "ingress -> "+s.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestGraphDiscover: the demo's objects in the API server, Istio-shaped
// series in a real Prometheus, and `meshwaf graph discover` finds the
// demo's graph: golden files plain, with --min-requests and with --merge.
func TestGraphDiscover(t *testing.T) {
	ctx := context.Background()
	installDemo(t, ctx)
	add(t, ctx, batchJob)
	srv := startIstioPrometheus(t, demoFlows())

	t.Run("plain", func(t *testing.T) {
		code, out, stderr := discover(t, srv.URL)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkGolden(t, "plain.yaml", out)
		want := []string{
			"default/batch -> default/db [8080]",
			"default/www -> default/auth [8080]",
			"default/www -> default/db [8080]",
			"ingress -> www",
		}
		if got := graphEdges(t, []byte(out)); !slices.Equal(got, want) {
			t.Errorf("edges %q, want %q", got, want)
		}
		for _, s := range []string{"without mTLS: default/legacy -> default/auth", "1 flows without mTLS"} {
			if !strings.Contains(stderr, s) {
				t.Errorf("stderr lacks %q:\n%s", s, stderr)
			}
		}
	})

	t.Run("min-requests", func(t *testing.T) {
		code, out, stderr := discover(t, srv.URL, "--min-requests", "10")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkGolden(t, "min-requests.yaml", out)
		want := []string{"default/www -> default/auth [8080]", "default/www -> default/db [8080]", "ingress -> www"}
		if got := graphEdges(t, []byte(out)); !slices.Equal(got, want) {
			t.Errorf("edges %q, want %q", got, want)
		}
		if !strings.Contains(out, "#   default/batch -> default/db: 3 requests") {
			t.Error("the low-volume edge is not listed as a comment")
		}
		// The discovered graph's policies allow exactly the demo graph's
		// flows: verify them against examples/shop-graph.yaml.
		dir := t.TempDir()
		graph := filepath.Join(dir, "discovered.yaml")
		if err := os.WriteFile(graph, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		policies := meshwaf(t, "policy", "generate", "-f", graph)
		pfile := filepath.Join(dir, "policies.yaml")
		if err := os.WriteFile(pfile, policies, 0o644); err != nil {
			t.Fatal(err)
		}
		report := meshwaf(t, "policy", "verify", "--graph", filepath.Join("examples", "shop-graph.yaml"), "-f", pfile)
		if !strings.Contains(string(report), "OK: the policies allow exactly the planned flows") {
			t.Errorf("policy verify:\n%s", report)
		}
	})

	t.Run("merge", func(t *testing.T) {
		code, out, stderr := discover(t, srv.URL, "--merge", filepath.Join("test", "cluster", "testdata", "discover", "hand-edited.yaml"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkGolden(t, "merge.yaml", out)
		for _, s := range []string{"new edge: default/batch -> default/db", "vanished edge (kept): default/auth -> default/db"} {
			if !strings.Contains(stderr, s) {
				t.Errorf("stderr lacks %q:\n%s", s, stderr)
			}
		}
		want := []string{
			"default/auth -> default/db [8080]",
			"default/batch -> default/db [8080]",
			"default/www -> default/auth [8080]GET,POST",
			"default/www -> default/db [8080]",
			"ingress -> www",
		}
		if got := graphEdges(t, []byte(out)); !slices.Equal(got, want) {
			t.Errorf("edges %q, want %q", got, want)
		}
	})
}

// batchJob is a client without a Service: discover makes it a service
// without ports, the source of its edge.
const batchJob = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: batch, namespace: default}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: batch, namespace: default}
spec:
  selector: {matchLabels: {app: batch}}
  template:
    metadata: {labels: {app: batch}}
    spec:
      serviceAccountName: batch
      containers: [{name: batch, image: busybox}]
`

// TestGraphDiscoverErrors: a Prometheus that cannot be reached, does not
// answer in time, answers partially or holds none of the metrics is an
// error that says so, and nothing is written to stdout.
func TestGraphDiscoverErrors(t *testing.T) {
	srv := startIstioPrometheus(t, demoFlows())

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()

	// A listener that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() { silent.Close() })

	// A proxy to the real Prometheus that adds a warning to each answer,
	// as a federating or long-term store does when a part did not answer.
	target, _ := url.Parse(srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		r.Header.Del("Accept-Encoding") // a plain JSON body to edit
	}
	proxy.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		m["warnings"] = []string{"store 10.0.0.7:10901 did not answer: partial response"}
		body, _ = json.Marshal(m)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Del("Content-Length")
		return nil
	}
	partial := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go partial.Serve(pl)
	t.Cleanup(func() { partial.Close() })

	tests := []struct {
		name string
		url  string
		args []string
		want []string
	}{
		{"unreachable", closedURL, nil, []string{"prometheus at " + closedURL, "connection refused"}},
		// Six queries two at a time: the first timeout cancels the others,
		// so it fails within about one --timeout, not three.
		{"slow", "http://" + silent.Addr().String(), []string{"--timeout", "3s"}, []string{"did not answer within 3s (--timeout)"}},
		{"partial", "http://" + pl.Addr().String(), nil, []string{"answered partially", "partial response", "refusing to build a graph"}},
		{"no series", srv.URL, []string{"--at", "2026-01-01T00:00:00Z"}, []string{"holds no istio_requests_total or istio_tcp_connections_opened_total series"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, out, stderr := discover(t, tt.url, tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if out != "" {
				t.Errorf("wrote a graph:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			limit := 30 * time.Second
			if tt.name == "slow" {
				limit = 6 * time.Second // twice --timeout
			}
			if d := time.Since(start); d > limit {
				t.Errorf("took %s, want under %s", d, limit)
			}
		})
	}
}
