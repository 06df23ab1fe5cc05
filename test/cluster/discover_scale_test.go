package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshwaf/meshwaf/test/cluster/promtest"
)

// scaleMesh is a synthetic mesh: services spread over namespaces, each
// calling perService others, with series over lookback at 15-minute samples
// (the TSDB's size grows with lookback; discover's answer does not).
type scaleMesh struct {
	namespaces, perNamespace, perService int
	lookback                             time.Duration
}

func (m scaleMesh) services() int { return m.namespaces * m.perNamespace }

func (m scaleMesh) name(i int) (ns, svc string) {
	return fmt.Sprintf("scale-%03d", i/m.perNamespace), fmt.Sprintf("svc-%05d", i)
}

// callee is the j-th destination of service i: a fixed spread over all
// services, never i itself.
func (m scaleMesh) callee(i, j int) int {
	n := m.services()
	return (i + 1 + j*(n/m.perService+7)) % n
}

// objects stores a ServiceAccount, Deployment and Service per service in
// the API server, 8 at a time; cleanup deletes them when the test ends.
func (m scaleMesh) objects(tb testing.TB, ctx context.Context, cleanup bool) {
	tb.Helper()
	for n := 0; n < m.namespaces; n++ {
		ns, _ := m.name(n * m.perNamespace)
		if err := env.cluster.ensureNamespace(ctx, ns); err != nil {
			tb.Fatal(err)
		}
	}
	var objs []*unstructured.Unstructured
	for i := 0; i < m.services(); i++ {
		ns, name := m.name(i)
		data := fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: %[2]s, namespace: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      serviceAccountName: %[2]s
      containers: [{name: app, image: app}]
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {app: %[2]s}
  ports: [{name: http, port: 8080}, {name: grpc-api, port: 9000}]
`, ns, name)
		o, err := decodeObjects([]byte(data))
		if err != nil {
			tb.Fatal(err)
		}
		objs = append(objs, o...)
	}
	each := func(f func(u *unstructured.Unstructured) error) {
		var wg sync.WaitGroup
		errs := make(chan error, len(objs))
		work := make(chan *unstructured.Unstructured)
		for range 8 {
			wg.Go(func() {
				for u := range work {
					if err := f(u); err != nil {
						errs <- fmt.Errorf("%s: %w", objectName(u), err)
					}
				}
			})
		}
		for _, u := range objs {
			work <- u
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			tb.Error(err)
			return
		}
	}
	each(func(u *unstructured.Unstructured) error {
		_, err := env.cluster.create(ctx, u, false)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if cleanup {
		tb.Cleanup(func() {
			each(func(u *unstructured.Unstructured) error {
				ri, err := env.cluster.resource(u)
				if err != nil {
					return err
				}
				err = ri.Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return err
			})
		})
	}
}

// series writes one istio_requests_total series per edge, 15-minute
// samples over the lookback before discoverAt.
func (m scaleMesh) series(tb testing.TB, file string) {
	tb.Helper()
	f, err := os.Create(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := promtest.NewWriter(f)
	const step = 15 * time.Minute
	n := int(m.lookback / step)
	samples := make([]promtest.Sample, n+1)
	for i := 0; i < m.services(); i++ {
		sns, src := m.name(i)
		for j := 0; j < m.perService; j++ {
			dns, dst := m.name(m.callee(i, j))
			for k := range samples {
				samples[k] = promtest.Sample{T: discoverAt.Add(-m.lookback + time.Duration(k)*step), Value: float64(k * (j + 1) * 10)}
			}
			w.Counter("istio_requests", promtest.Labels{
				"reporter": "destination", "request_protocol": "http", "response_code": "200",
				"connection_security_policy": "mutual_tls",
				"source_workload":            src, "source_workload_namespace": sns,
				"source_principal":     "spiffe://cluster.local/ns/" + sns + "/sa/" + src,
				"destination_workload": dst, "destination_workload_namespace": dns,
				"destination_principal":    "spiffe://cluster.local/ns/" + dns + "/sa/" + dst,
				"destination_service_name": dst, "destination_service_namespace": dns,
			}, samples)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

// runScale fills the API server and a real Prometheus with m, runs the
// built `meshwaf graph discover` once and checks the graph has every edge.
// It logs the wall time and peak RSS of discover (and of each set-up step).
func runScale(tb testing.TB, m scaleMesh, cleanup bool) (wall time.Duration, maxRSSKiB int64) {
	tb.Helper()
	ctx := context.Background()
	tl, err := promtest.ToolsFromEnv()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	start := time.Now()
	m.objects(tb, ctx, cleanup)
	tb.Logf("API server: %d services (Service, Deployment, ServiceAccount each) stored in %s", m.services(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	om := filepath.Join(dir, "series.om")
	m.series(tb, om)
	fi, _ := os.Stat(om)
	tb.Logf("OpenMetrics: %d series, %d samples each, %d MiB written in %s", m.services()*m.perService, int(m.lookback/(15*time.Minute))+1,
		fi.Size()>>20, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := promtest.Fill(ctx, tl, om, filepath.Join(dir, "tsdb")); err != nil {
		tb.Fatal(err)
	}
	os.Remove(om)
	tb.Logf("promtool create-blocks-from openmetrics: %s", time.Since(start).Round(time.Millisecond))
	srv, err := promtest.Serve(ctx, tl, dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Stop()

	args := []string{"graph", "discover", "--prometheus", srv.URL, "--kubeconfig", env.cluster.kubeconfig,
		"--at", discoverAt.Format(time.RFC3339), "--lookback", fmt.Sprintf("%dh", int(m.lookback.Hours())), "--timeout", "5m",
		"--request-timeout", "5m", "--exclude-namespace", "kube-system"}
	cmd := exec.Command(env.meshwaf, args...)
	out, err := os.Create(filepath.Join(dir, "graph.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	start = time.Now()
	err = cmd.Run()
	wall = time.Since(start)
	if err != nil {
		tb.Fatalf("meshwaf %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	maxRSSKiB = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	want := fmt.Sprintf("%d edges;", m.services()*m.perService)
	if !strings.Contains(stderr.String(), want) {
		tb.Errorf("stderr lacks %q:\n%.2000s", want, stderr.String())
	}
	tb.Logf("graph discover: %d services, %d edges in %s, peak RSS %d MiB", m.services(), m.services()*m.perService,
		wall.Round(time.Millisecond), maxRSSKiB>>10)
	return wall, maxRSSKiB
}

// TestGraphDiscoverScaleSmall runs the scale set-up at a CI size: 100
// services, 1,000 edges.
func TestGraphDiscoverScaleSmall(t *testing.T) {
	runScale(t, scaleMesh{namespaces: 4, perNamespace: 25, perService: 10, lookback: 12 * time.Hour}, true)
}

// BenchmarkGraphDiscoverScale: 10,000 services in 100 namespaces, 100,000
// edges, 12 hours of 15-minute samples. Not in CI (a run stores 30,000
// objects and writes about 2.4 GB of OpenMetrics); run it alone:
//
//	eval "$(.ci/tools.sh)" && cd test/cluster && go test -run '^$' -bench GraphDiscoverScale -benchtime 1x -timeout 60m
func BenchmarkGraphDiscoverScale(b *testing.B) {
	m := scaleMesh{namespaces: 100, perNamespace: 100, perService: 10, lookback: 12 * time.Hour}
	var wall time.Duration
	var rss int64
	for range b.N {
		wall, rss = runScale(b, m, false)
	}
	b.ReportMetric(wall.Seconds(), "s/discover")
	b.ReportMetric(float64(rss>>10), "MiB-peak-RSS")
	if wall > 30*time.Second {
		b.Errorf("discover took %s, over the 30 s target", wall)
	}
}
