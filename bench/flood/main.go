// Command flood fires one burst of large-body checks at the meshwaf binary,
// all at once, each with the deadline Envoy gives a check (500 ms in the
// shipped manifests), and prints what admission control made of it: checks
// answered with a verdict in time, checks answered at once by the failure
// policy, checks whose deadline passed, latency percentiles of each, and the
// server's peak RSS (VmHWM) against the pod's memory limit.
//
//	go run ./bench/flood                      # 200 checks of 1 MiB, 500 ms deadline
//	go run ./bench/flood -n 400 -shape text   # other bursts
//
// The server runs with the shipped defaults plus failureStatus 503, which
// tells failure-policy answers from CRS denials (403). With -gomemlimit the
// server gets GOMEMLIMIT, which is how the admission defaults see a memory
// limit when no cgroup sets one. It builds the binary with scripts/build.sh
// unless -binary names one. It exits 1 when the peak RSS passes -max-rss or
// a check fails with a gRPC error other than its deadline or the refusal of
// a call over maxStreams.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshwaf/meshwaf/internal/checkreq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

type options struct {
	n, conns, bodyBytes int
	shape               string
	deadline, timeout   time.Duration
	binary, gomemlimit  string
	maxRSS              int64
	config              string
}

func run() error {
	var o options
	flag.IntVar(&o.n, "n", 200, "checks fired at once")
	flag.IntVar(&o.bodyBytes, "body", 1<<20, "body bytes of each check (the default profile inspects up to 1 MiB)")
	flag.StringVar(&o.shape, "shape", "json", "body: json (an API payload of many small values) or text")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections (Envoy keeps one per worker thread)")
	flag.DurationVar(&o.deadline, "deadline", 500*time.Millisecond, "deadline of each check (Envoy's ext_authz timeout)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on the run after the build")
	flag.StringVar(&o.binary, "binary", "", "meshwaf binary (default: build it with scripts/build.sh)")
	flag.StringVar(&o.gomemlimit, "gomemlimit", "512MiB", "GOMEMLIMIT of the server (the pod's memory limit); empty: none")
	flag.Int64Var(&o.maxRSS, "max-rss", 512<<20, "fail when the server's peak RSS passes this many bytes (the pod's limit)")
	flag.StringVar(&o.config, "config", "", "extra YAML appended to the server's config")
	flag.Parse()
	if o.n < 1 || o.conns < 1 || o.bodyBytes < 0 || o.deadline <= 0 {
		return errors.New("-n and -conns must be positive, -body not negative, -deadline positive")
	}
	dir, err := os.MkdirTemp("", "meshwaf-flood-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := o.binary
	if bin == "" {
		bin = filepath.Join(dir, "meshwaf")
		out, err := exec.Command("sh", "scripts/build.sh", bin, "flood").CombinedOutput() //nolint:gosec // a temp path of ours
		if err != nil {
			return fmt.Errorf("building (run from the repository root): %w\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cfgPath := filepath.Join(dir, "meshwaf.yaml")
	if err := os.WriteFile(cfgPath, []byte("failureStatus: 503\nlogLevel: warn\n"+o.config+"\n"), 0o600); err != nil {
		return err
	}
	srv, err := startServer(ctx, bin, cfgPath, o.gomemlimit)
	if err != nil {
		return err
	}
	defer srv.stop()

	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		c, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(o.bodyBytes+(1<<20))))
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}
	// Warm up each connection with a small check.
	for _, c := range conns {
		if _, err := authv3.NewAuthorizationClient(c).Check(ctx, check(0, "")); err != nil {
			return fmt.Errorf("warm-up check: %w", err)
		}
	}
	body, err := makeBody(o.shape, o.bodyBytes)
	if err != nil {
		return err
	}
	idleKiB, _ := procStatus(srv.pid(), "VmRSS:")

	type result struct {
		lat     time.Duration
		outcome string
	}
	results := make([]result, o.n)
	// Encoded up front, as Envoy holds the buffered body: the burst costs
	// the client a copy per check, not a marshal.
	reqs := make([]checkreq.Raw, o.n)
	for i := range reqs {
		if reqs[i], err = proto.Marshal(check(i, body)); err != nil {
			return err
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range o.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := conns[i%len(conns)]
			<-start
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, o.deadline)
			defer cancel()
			resp, err := checkreq.Invoke(cctx, conn, reqs[i])
			results[i] = result{lat: time.Since(t0), outcome: outcomeOf(resp, err)}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	// Let the inspections whose callers gave up finish before reading the
	// server's counters.
	m, err := srv.waitIdle(ctx)
	if err != nil {
		return err
	}
	hwmKiB, err := procStatus(srv.pid(), "VmHWM:")
	if err != nil {
		return err
	}

	by := map[string][]time.Duration{}
	for _, r := range results {
		by[r.outcome] = append(by[r.outcome], r.lat)
	}
	fmt.Printf("meshwaf flood: %d checks at once, %s body of %d bytes, deadline %v, %d connections, server GOMEMLIMIT %q\n",
		o.n, o.shape, len(body), o.deadline, o.conns, o.gomemlimit)
	fmt.Printf("  limits      %s\n", srv.limits)
	fmt.Printf("  burst       %v until the last answer or deadline\n", elapsed.Round(time.Millisecond))
	for _, k := range []string{outVerdict, outFailure, outRefused, outDeadline, outError} {
		l := by[k]
		slices.Sort(l)
		fmt.Printf("  %-40s %4d", k, len(l))
		if len(l) > 0 {
			fmt.Printf("   p50 %v  p99 %v  max %v", pct(l, 0.50).Round(time.Millisecond), pct(l, 0.99).Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
		}
		fmt.Println()
	}
	fmt.Printf("  server      rejected: streams %.0f, inflight %.0f, body_bytes %.0f; canceled %.0f; decisions %.0f\n",
		m["meshwaf_checks_rejected_total{reason=\"streams\"}"],
		m["meshwaf_checks_rejected_total{reason=\"inflight\"}"], m["meshwaf_checks_rejected_total{reason=\"body_bytes\"}"],
		m["meshwaf_check_errors_total{reason=\"canceled\"}"], m["decisions"])
	fmt.Printf("  rss         idle %.1f MiB, peak (VmHWM) %.1f MiB, limit %.0f MiB\n",
		float64(idleKiB)/1024, float64(hwmKiB)/1024, float64(o.maxRSS)/(1<<20))

	var errs []error
	if n := len(by[outError]); n > 0 {
		errs = append(errs, fmt.Errorf("%d checks failed with a gRPC error other than the deadline or RESOURCE_EXHAUSTED", n))
	}
	if o.deadline > 0 && len(by[outVerdict]) == 0 {
		fmt.Println("  note        no check got a verdict within the deadline: one body alone takes longer here")
	}
	if hwmKiB*1024 > o.maxRSS {
		errs = append(errs, fmt.Errorf("peak RSS %d MiB is over the limit %d MiB", hwmKiB/1024, o.maxRSS>>20))
	}
	return errors.Join(errs...)
}

// Outcomes of a check, as Envoy would see them.
const (
	outVerdict  = "verdict in time (admitted)"
	outFailure  = "failure policy, status 503 (rejected)"
	outDeadline = "deadline exceeded (Envoy: statusOnError)"
	outRefused  = "refused unread (Envoy: statusOnError)"
	outError    = "other gRPC error"
)

func outcomeOf(resp *authv3.CheckResponse, err error) string {
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
		return outDeadline
	case status.Code(err) == codes.ResourceExhausted: // maxStreams calls were open
		return outRefused
	case err != nil:
		return outError
	case resp.GetDeniedResponse().GetStatus().GetCode() == 503:
		return outFailure
	default:
		return outVerdict
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// makeBody returns a body of about n bytes.
func makeBody(shape string, n int) (string, error) {
	var b strings.Builder
	switch shape {
	case "json":
		b.WriteString(`{"items":[`)
		for i := 0; b.Len() < n-64; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"sku":"A-%d","qty":%d,"note":"leave at the door"}`, i, i%7)
		}
		b.WriteString("]}")
	case "text":
		for b.Len() < n-32 {
			b.WriteString("lorem ipsum dolor sit amet ")
		}
	default:
		return "", fmt.Errorf("-shape %q: json or text", shape)
	}
	return b.String(), nil
}

// check is a POST as Envoy's ext_authz filter sends it with its body.
func check(i int, body string) *authv3.CheckRequest {
	const authority = "orders.default.svc.cluster.local:8080"
	ct := "application/json"
	if body != "" && body[0] != '{' {
		ct = "text/plain"
	}
	return checkreq.HTTP{
		StreamID: strconv.Itoa(i), Method: "POST", Path: "/api/v1/orders", Authority: authority, Host: authority,
		Protocol: "HTTP/1.1", Body: body,
		Headers: map[string]string{
			"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0", "accept": "application/json",
			"content-type": ct, "content-length": strconv.Itoa(len(body)), "x-envoy-auth-partial-body": "false",
			"x-request-id": fmt.Sprintf("flood-%d", i),
		},
		Source:      checkreq.Peer("10.0.0.5", 41234, "spiffe://cluster.local/ns/default/sa/www"),
		Destination: checkreq.Peer("10.0.0.9", 8080, "spiffe://cluster.local/ns/default/sa/orders"),
	}.CheckRequest()
}

// --- the server ---------------------------------------------------------------

type server struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	limits    string
	done      chan struct{}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startServer runs `meshwaf serve` on loopback and waits for its serving
// line, which names the admission limits in force.
func startServer(ctx context.Context, bin, cfg, gomemlimit string) (*server, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, //nolint:gosec // the binary just built or named by -binary
		"--grpc-address", grpcAddr, "--admin-address", adminAddr, "--log-level", "info")
	cmd.Env = os.Environ()
	if gomemlimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+gomemlimit)
	}
	cmd.Stdout = io.Discard // audit lines
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, grpcAddr: grpcAddr, adminAddr: adminAddr, done: make(chan struct{})}
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, `"msg":"serving"`) {
				serving <- line
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case line := <-serving:
		s.limits = limitsOf(line)
	case <-s.done:
		return nil, errors.New("meshwaf serve exited before it was ready")
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, errors.New("meshwaf serve not serving after 60s")
	}
	return s, nil
}

// limitsOf picks the admission fields of the serving line.
func limitsOf(line string) string {
	var parts []string
	for _, k := range []string{"max_in_flight", "max_body_bytes_in_flight", "queue_wait", "cpus", "memory_limit"} {
		if i := strings.Index(line, `"`+k+`":`); i >= 0 {
			v := line[i+len(k)+3:]
			if j := strings.IndexAny(v, ",}"); j >= 0 {
				v = v[:j]
			}
			parts = append(parts, k+"="+strings.Trim(v, `"`))
		}
	}
	return strings.Join(parts, " ")
}

// waitIdle waits until no check is in flight and returns the counters.
func (s *server) waitIdle(ctx context.Context) (map[string]float64, error) {
	for {
		m, err := s.metrics()
		if err != nil {
			return nil, err
		}
		if m["meshwaf_checks_in_flight"] == 0 {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("checks still in flight: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// metrics reads the meshwaf_* samples of /metrics; "decisions" sums
// meshwaf_checks_total.
func (s *server) metrics() (map[string]float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "meshwaf_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
		if strings.HasPrefix(line, "meshwaf_checks_total{") {
			m["decisions"] += v
		}
	}
	return m, sc.Err()
}

// procStatus reads a kB field of /proc/<pid>/status.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
