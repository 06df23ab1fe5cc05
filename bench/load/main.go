// Command load drives the meshwaf binary at saturation with Envoy-shaped
// CheckRequests (a mix of GETs, JSON POSTs and attacks) over gRPC on
// loopback and prints the figures: checks/s, latency percentiles, errors
// and the server's RSS sampled over the run.
//
//	go run ./bench/load                 # soak: 1,000,000 checks
//	go run ./bench/load -n 20000        # the short run CI does
//
// It builds the binary with scripts/build.sh unless -binary names one. It
// exits 1 when any check fails or gets the wrong decision.
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshwaf/meshwaf/internal/checkreq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	n, concurrency, conns int
	binary                string
	timeout               time.Duration
	sample                time.Duration
}

func run() error {
	var o options
	flag.IntVar(&o.n, "n", 1_000_000, "number of checks")
	flag.IntVar(&o.concurrency, "c", 4*runtime.NumCPU(), "checks in flight")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections (Envoy keeps one per worker thread)")
	flag.StringVar(&o.binary, "binary", "", "meshwaf binary (default: build it with scripts/build.sh)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "bound on the whole run")
	flag.DurationVar(&o.sample, "sample", time.Second, "RSS sampling interval")
	flag.Parse()
	if o.n < 1 || o.concurrency < 1 || o.conns < 1 {
		return errors.New("-n, -c and -conns must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	bin := o.binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "meshwaf-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "meshwaf")
		out, err := exec.CommandContext(ctx, "sh", "scripts/build.sh", bin, "load").CombinedOutput() //nolint:gosec // a temp path of ours
		if err != nil {
			return fmt.Errorf("building (run from the repository root): %w\n%s", err, out)
		}
	}
	srv, err := startServer(ctx, bin)
	if err != nil {
		return err
	}
	defer srv.stop()

	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		c, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}

	mix := requestMix()
	// Warm up: compile caches, connections.
	for i := range 200 {
		if _, err := authv3.NewAuthorizationClient(conns[i%len(conns)]).Check(ctx, mix[i%len(mix)].req); err != nil {
			return fmt.Errorf("warm-up check: %w", err)
		}
	}

	lat := make([]time.Duration, o.n)
	var next, done, errs, wrong atomic.Int64
	var firstErr sync.Once
	var errMsg string
	stopSampling := make(chan struct{})
	samples := sampleRSS(srv.pid(), o.sample, &done, stopSampling)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := authv3.NewAuthorizationClient(conns[w%len(conns)])
			for {
				i := next.Add(1) - 1
				if i >= int64(o.n) || ctx.Err() != nil {
					return
				}
				m := mix[i%int64(len(mix))]
				t0 := time.Now()
				resp, err := client.Check(ctx, m.req)
				lat[i] = time.Since(t0)
				done.Add(1)
				switch {
				case err != nil:
					errs.Add(1)
					firstErr.Do(func() { errMsg = err.Error() })
				case (codes.Code(resp.GetStatus().GetCode()) == codes.OK) != m.allow:
					wrong.Add(1)
					firstErr.Do(func() { errMsg = fmt.Sprintf("%s: status %d", m.name, resp.GetStatus().GetCode()) })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	rss := <-samples

	n := int(done.Load())
	lat = lat[:n]
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if n == 0 {
			return 0
		}
		return lat[min(n-1, int(p*float64(n)))]
	}
	fmt.Printf("meshwaf load: %d checks (mix: %s), %d in flight on %d connections, GOMAXPROCS %d\n",
		n, mixNames(mix), o.concurrency, o.conns, runtime.GOMAXPROCS(0))
	fmt.Printf("  elapsed     %v\n", elapsed.Round(time.Millisecond))
	fmt.Printf("  checks/s    %.0f\n", float64(n)/elapsed.Seconds())
	fmt.Printf("  latency     p50 %v  p99 %v  p999 %v  max %v\n", pct(0.50), pct(0.99), pct(0.999), pct(1))
	fmt.Printf("  errors      %d gRPC errors, %d wrong decisions\n", errs.Load(), wrong.Load())
	printRSS(rss)
	if errs.Load() > 0 || wrong.Load() > 0 {
		return fmt.Errorf("%d errors, %d wrong decisions; first: %s", errs.Load(), wrong.Load(), errMsg)
	}
	if n < o.n {
		return fmt.Errorf("only %d of %d checks ran (timeout %v)", n, o.n, o.timeout)
	}
	return nil
}

// --- the request mix ---------------------------------------------------------

type mixed struct {
	name  string
	allow bool
	req   *authv3.CheckRequest
}

func mixNames(m []mixed) string {
	count := map[string]int{}
	var names []string
	for _, x := range m {
		if count[x.name] == 0 {
			names = append(names, x.name)
		}
		count[x.name]++
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%d%% %s", 100*count[n]/len(m), n))
	}
	return strings.Join(parts, ", ")
}

// requestMix is 10 requests: 5 GETs, 3 JSON POSTs, 2 attacks (SQLi, XSS).
func requestMix() []mixed {
	get := func(i int) mixed {
		return mixed{"GET", true, envoyCheck("GET", fmt.Sprintf("/api/v1/users/%d?expand=roles&fields=id,name", 40+i), "", "")}
	}
	post := func(i int) mixed {
		body := `{"customer":"joe@example.com","items":[{"sku":"A-1001","qty":2},{"sku":"B-2002","qty":` + strconv.Itoa(i+1) +
			`}],"address":{"street":"1 Main Street","city":"Springfield","zip":"12345"},"note":"leave at the door"}`
		return mixed{"JSON POST", true, envoyCheck("POST", "/api/v1/orders", "application/json", body)}
	}
	return []mixed{
		get(0), post(0), get(1), get(2),
		{"attack", false, envoyCheck("GET", "/?username=joe%40example.com&password=%3BUNION+SELECT+1%2C+version%28%29+limit+1%2C1--", "", "")},
		post(1), get(3), post(2), get(4),
		{"attack", false, envoyCheck("POST", "/api/v1/comments", "application/json", `{"comment":"<script>alert(document.cookie)</script>"}`)},
	}
}

// envoyCheck is a CheckRequest as Envoy's HTTP ext_authz filter sends it.
func envoyCheck(method, path, contentType, body string) *authv3.CheckRequest {
	const authority = "auth.default.svc.cluster.local:8080"
	h := map[string]string{
		"user-agent":        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"accept":            "application/json",
		"accept-encoding":   "gzip, deflate, br",
		"x-request-id":      "7d4bd6a2-9c1e-4b8e-9f1a-2c3d4e5f6a7b",
		"x-forwarded-proto": "http",
	}
	if body != "" {
		h["content-type"] = contentType
		h["content-length"] = strconv.Itoa(len(body))
		h["x-envoy-auth-partial-body"] = "false"
	}
	return checkreq.HTTP{
		StreamID: "11393487597445375813", Method: method, Path: path, Authority: authority, Host: authority,
		Protocol: "HTTP/1.1", Headers: h, Body: body,
		Source:      checkreq.Peer("10.0.0.5", 41234, "spiffe://cluster.local/ns/default/sa/www"),
		Destination: checkreq.Peer("10.0.0.9", 8080, "spiffe://cluster.local/ns/default/sa/auth"),
	}.CheckRequest()
}

// --- the server ----------------------------------------------------------------

type server struct {
	cmd      *exec.Cmd
	grpcAddr string
	done     chan struct{}
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

// startServer runs `meshwaf serve` on loopback with the defaults (PL1,
// block) and waits for /readyz.
func startServer(ctx context.Context, bin string) (*server, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", //nolint:gosec // the binary just built or named by -binary
		"--grpc-address", grpcAddr, "--admin-address", adminAddr, "--log-level", "warn")
	cmd.Stdout = io.Discard // audit lines of the attacks
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, grpcAddr: grpcAddr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, errors.New("meshwaf serve exited before it was ready")
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("meshwaf serve not ready after 30s")
		}
	}
}

// --- RSS -------------------------------------------------------------------------

type rssSample struct {
	at     time.Duration
	checks int64
	kib    int64
}

// sampleRSS reads VmRSS of pid every interval until stop is closed.
func sampleRSS(pid int, interval time.Duration, done *atomic.Int64, stop <-chan struct{}) <-chan []rssSample {
	out := make(chan []rssSample, 1)
	go func() {
		var s []rssSample
		start := time.Now()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		take := func() {
			if kib, err := vmRSS(pid); err == nil {
				s = append(s, rssSample{time.Since(start), done.Load(), kib})
				// A progress line every ~10 s, so a long soak shows its state.
				if len(s)%10 == 0 {
					fmt.Fprintf(os.Stderr, "  ... %v  %d checks  %.0f checks/s  rss %.1f MiB\n", time.Since(start).Round(time.Second),
						done.Load(), float64(done.Load())/time.Since(start).Seconds(), float64(kib)/1024)
				}
			}
		}
		take()
		for {
			select {
			case <-stop:
				take()
				out <- s
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return out
}

func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// printRSS prints about ten samples spread over the run and compares the
// second half with the first: flat means the later samples do not keep
// growing.
func printRSS(s []rssSample) {
	if len(s) == 0 {
		fmt.Println("  rss         (not sampled: no /proc)")
		return
	}
	step := max(1, len(s)/10)
	fmt.Printf("  rss over the run (%d samples):\n", len(s))
	for i := 0; i < len(s); i += step {
		fmt.Printf("    %8v  %9d checks  %7.1f MiB\n", s[i].at.Round(time.Second), s[i].checks, float64(s[i].kib)/1024)
	}
	if last := s[len(s)-1]; (len(s)-1)%step != 0 {
		fmt.Printf("    %8v  %9d checks  %7.1f MiB\n", last.at.Round(time.Second), last.checks, float64(last.kib)/1024)
	}
	maxOf := func(xs []rssSample) int64 {
		var m int64
		for _, x := range xs {
			m = max(m, x.kib)
		}
		return m
	}
	if len(s) >= 4 {
		first, second := maxOf(s[:len(s)/2]), maxOf(s[len(s)/2:])
		fmt.Printf("  rss peak    first half %.1f MiB, second half %.1f MiB (%+.1f%%)\n",
			float64(first)/1024, float64(second)/1024, 100*float64(second-first)/float64(first))
	}
}
