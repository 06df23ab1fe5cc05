// Command coraza benchmarks meshwaf's engine against stock Coraza on the
// same CRS and settings, in process and through gRPC ext_authz on loopback,
// and prints medians and ratios.
//
// Coraza's operator registry is process-global and inspector.Compile puts
// meshwaf's @rx into it, so the two sides never share a process: the parent
// runs this binary again as a child per side and round, alternating which
// side goes first, and the stock child never calls inspector.Compile. Each
// child first checks every shape's decision, then warms up every shape and
// path for -warmup, then runs testing.Benchmark per shape and path and
// prints one JSON line per result.
//
// Build it as the product is built (scripts/build.sh), with -tags
// no_fs_access: without it Coraza writes multipart file parts to temporary
// files and removes them, which the product never does, so the harness
// refuses to run unless -allow-fs-access is given.
//
//	go run -tags no_fs_access ./bench/coraza -rounds 5 -benchtime 1s -out /tmp/bench
//	go run -tags no_fs_access,re2_cgo ./bench/coraza ...        # the accelerated build
//	benchstat /tmp/bench/stock.txt /tmp/bench/meshwaf.txt
//
// With -min-ratio R it exits 1, naming them, when a shape and path's
// wall-time ratio (median stock / median meshwaf) is below R.
//
// A child can be run by hand, e.g. to profile one shape:
//
//	go run -tags no_fs_access ./bench/coraza -child meshwaf -shapes JSON1KiB -paths inprocess -cpuprofile cpu.pprof
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshwaf/meshwaf/extauthz"
	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

const (
	sideStock   = "stock"
	sideMeshwaf = "meshwaf"
)

type options struct {
	child         string
	rounds        int
	benchtime     string
	warmup        time.Duration
	minIters      int
	out           string
	shapes        string
	paths         string
	cpuprofile    string
	allowFSAccess bool
	minRatio      float64
}

func main() {
	testing.Init()
	var o options
	flag.StringVar(&o.child, "child", "", "run one side (stock or meshwaf) and print results (internal)")
	flag.IntVar(&o.rounds, "rounds", 5, "alternating rounds per side")
	flag.StringVar(&o.benchtime, "benchtime", "1s", "time per benchmark (go test -benchtime)")
	flag.IntVar(&o.minIters, "min-iters", 3, "iterations per benchmark at least, when -benchtime is a duration too short for them")
	flag.DurationVar(&o.warmup, "warmup", 300*time.Millisecond,
		"warm-up per shape and path before measuring: the op runs until this much time is spent, at least once")
	flag.StringVar(&o.out, "out", "", "directory for stock.txt and meshwaf.txt in Go benchmark format")
	flag.StringVar(&o.shapes, "shapes", "", "comma-separated shapes to run (default all but the opt-in JSONList1MiB, which stock Coraza takes minutes per op on)")
	flag.StringVar(&o.paths, "paths", "inprocess,grpc", "comma-separated paths: inprocess, grpc")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "child only: write a CPU profile")
	flag.Float64Var(&o.minRatio, "min-ratio", 0,
		"exit 1 when a shape and path's wall-time ratio (median stock / median meshwaf) is below this (0: no check)")
	flag.BoolVar(&o.allowFSAccess, "allow-fs-access", false,
		"run even if built without -tags no_fs_access (Coraza then writes multipart uploads to temporary files)")
	flag.Parse()
	if err := checkBuild(builtNoFSAccess, o.allowFSAccess); err != nil {
		fmt.Fprintln(os.Stderr, "bench/coraza:", err)
		os.Exit(2)
	}
	if err := flag.Set("test.benchtime", o.benchtime); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var err error
	if o.child != "" {
		err = runChild(o, os.Stdout)
	} else {
		err = runParent(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/coraza:", err)
		os.Exit(1)
	}
}

// checkBuild refuses a build without the no_fs_access tag unless allowed:
// Coraza would then spend part of the multipart shape writing and removing
// temporary upload files, which the product (built with the tag) never does.
func checkBuild(noFSAccess, allow bool) error {
	if noFSAccess || allow {
		return nil
	}
	return errors.New("built without -tags no_fs_access, unlike the product (scripts/build.sh): " +
		"Coraza would write multipart uploads to temporary files and skew the comparison; " +
		"run go run -tags no_fs_access ./bench/coraza ... (-tags no_fs_access,re2_cgo for the accelerated build), " +
		"or pass -allow-fs-access to measure this build anyway")
}

// buildState describes the no_fs_access tag for the parent's header.
func buildState(noFSAccess bool) string {
	if noFSAccess {
		return "no_fs_access"
	}
	return "WITHOUT no_fs_access (-allow-fs-access: temp files for uploads)"
}

// profile is the one both sides compile: PL1 block, meshwaf's defaults,
// enough arguments and body for the largest shape to be inspected whole.
func profile() inspector.Profile {
	return inspector.Profile{ArgumentsLimit: 2 * largeAPILeaves, RequestBodyLimit: 2 << 20}
}

type result struct {
	Side        string  `json:"side"`
	Name        string  `json:"name"`
	N           int     `json:"n"`
	NsPerOp     float64 `json:"nsPerOp"`
	BytesPerOp  int64   `json:"bytesPerOp"`
	AllocsPerOp int64   `json:"allocsPerOp"`
	// CPUNsPerOp is the process's user+system CPU time per operation
	// (GC and, for gRPC, both ends included): on a shared machine it
	// moves less with other load than the wall time does.
	CPUNsPerOp float64 `json:"cpuNsPerOp"`
}

type inspectFunc func(inspector.Request) (denied bool, err error)

func runChild(o options, w io.Writer) error {
	var (
		inproc inspectFunc
		server authv3.AuthorizationServer
		reg    func(*grpc.Server)
	)
	switch o.child {
	case sideStock:
		waf, err := stockWAF(profile())
		if err != nil {
			return err
		}
		inproc = func(r inspector.Request) (bool, error) { return stockInspect(waf, &r) }
		s := &stockServer{waf: waf}
		server, reg = s, func(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }
	case sideMeshwaf:
		rs, err := inspector.Compile(profile())
		if err != nil {
			return err
		}
		inproc = func(r inspector.Request) (bool, error) {
			v, err := rs.Inspect(context.Background(), r, "")
			return !v.Allowed(), err
		}
		s, err := extauthz.NewServer(extauthz.Options{Engine: rs, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
		if err != nil {
			return err
		}
		server, reg = s, s.Register
	default:
		return fmt.Errorf("unknown side %q", o.child)
	}

	client, stop, err := loopback(reg)
	if err != nil {
		return err
	}
	defer stop()

	var todo []shape
	for _, s := range shapes() {
		if (o.shapes == "" && !s.optIn) || slices.Contains(strings.Split(o.shapes, ","), s.name) {
			todo = append(todo, s)
		}
	}
	ctx := context.Background()
	for _, s := range todo {
		denied, err := inproc(s.req)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		resp, err := server.Check(ctx, corpus.CheckRequest(s.req))
		if err != nil {
			return fmt.Errorf("%s via Check: %w", s.name, err)
		}
		if denied != s.deny || (resp.GetDeniedResponse() != nil) != s.deny {
			return fmt.Errorf("%s: %s side denied=%v (Check denied=%v), want %v", s.name, o.child, denied, resp.GetDeniedResponse() != nil, s.deny)
		}
	}

	paths := strings.Split(o.paths, ",")
	opFor := func(s shape, p string) (func() error, error) {
		switch p {
		case "inprocess":
			return func() error { _, err := inproc(s.req); return err }, nil
		case "grpc":
			cr := corpus.CheckRequest(s.req)
			return func() error { _, err := client.Check(ctx, cr); return err }, nil
		}
		return nil, fmt.Errorf("unknown path %q", p)
	}

	// Warm up every shape and path before measuring any, so that the first
	// shape measured does not pay for the runtime, heap and caches settling
	// (its ratio swung between runs), then collect the warm-up's garbage.
	for _, s := range todo {
		for _, p := range paths {
			op, err := opFor(s, p)
			if err != nil {
				return err
			}
			if _, err := warmUp(op, o.warmup, time.Now); err != nil {
				return fmt.Errorf("warm-up %s/%s: %w", p, s.name, err)
			}
		}
	}
	runtime.GC()

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	enc := json.NewEncoder(w)
	for _, s := range todo {
		for _, p := range paths {
			op, err := opFor(s, p)
			if err != nil {
				return err
			}
			run := func(b *testing.B) { //nolint:thelper // a benchmark body for testing.Benchmark
				b.ReportAllocs()
				for b.Loop() {
					if err := op(); err != nil {
						b.Fatal(err)
					}
				}
			}
			// Settle the heap the previous benchmark left and touch this
			// shape's data once more, so no shape pays for another (the
			// warm-up above did the rest; one op, because the 128 KiB
			// shape takes seconds per op).
			runtime.GC()
			t0 := time.Now()
			if err := op(); err != nil {
				return fmt.Errorf("%s/%s: %w", p, s.name, err)
			}
			if err := flag.Set("test.benchtime", benchtimeFor(o.benchtime, time.Since(t0), o.minIters)); err != nil {
				return err
			}
			ops := 0
			counted := func(b *testing.B) { //nolint:thelper // a benchmark body for testing.Benchmark
				run(b)
				ops += b.N
			}
			cpu0 := cpuTime()
			r := testing.Benchmark(counted)
			cpu := cpuTime() - cpu0
			if r.N == 0 || ops == 0 {
				return fmt.Errorf("%s/%s failed", p, s.name)
			}
			if err := enc.Encode(result{Side: o.child, Name: p + "/" + s.name, N: r.N,
				NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N), BytesPerOp: r.AllocedBytesPerOp(), AllocsPerOp: r.AllocsPerOp(),
				CPUNsPerOp: float64(cpu.Nanoseconds()) / float64(ops)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// benchtimeFor is the -test.benchtime for one benchmark: benchtime, unless
// it is a duration that ops of opTime would fill fewer than minIters times;
// then exactly minIters iterations. A single iteration of the slow shapes
// was bimodal (Coraza's pooled transactions sometimes grow their maps).
func benchtimeFor(benchtime string, opTime time.Duration, minIters int) string {
	d, err := time.ParseDuration(benchtime)
	if err != nil || minIters < 1 || opTime <= 0 || opTime*time.Duration(minIters) <= d {
		return benchtime
	}
	return strconv.Itoa(minIters) + "x"
}

// warmUp runs op until d has passed on now's clock, at least once, and
// returns how often it ran. Fast shapes run thousands of times; a shape
// whose op takes longer than d (the 128 KiB JSON takes seconds) runs once.
func warmUp(op func() error, d time.Duration, now func() time.Time) (int, error) {
	start := now()
	n := 0
	for n == 0 || now().Sub(start) < d {
		if err := op(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// loopback serves on 127.0.0.1 and returns a client of it.
func loopback(register func(*grpc.Server)) (authv3.AuthorizationClient, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	g := grpc.NewServer()
	register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		g.Stop()
		return nil, nil, err
	}
	return authv3.NewAuthorizationClient(conn), func() { _ = conn.Close(); g.Stop() }, nil
}

func runParent(o options) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("accelerator: %s  build: %s  GOMAXPROCS: %d  rounds: %d  benchtime: %s  warmup: %s  load: %s\n",
		inspector.RxAccelerator(), buildState(builtNoFSAccess), runtime.GOMAXPROCS(0), o.rounds, o.benchtime, o.warmup, loadavg())
	all := map[string]map[string][]result{sideStock: {}, sideMeshwaf: {}}
	var names []string
	for round := range o.rounds {
		order := []string{sideStock, sideMeshwaf}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, side := range order {
			args := []string{"-child", side, "-benchtime", o.benchtime, "-min-iters", strconv.Itoa(o.minIters), "-warmup", o.warmup.String(), "-shapes", o.shapes, "-paths", o.paths}
			if o.allowFSAccess {
				args = append(args, "-allow-fs-access")
			}
			cmd := exec.Command(exe, args...) //nolint:gosec // this binary itself, as a child
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("round %d, %s: %w\n%s", round+1, side, err, stderr.String())
			}
			sc := bufio.NewScanner(&stdout)
			for sc.Scan() {
				var r result
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					return fmt.Errorf("round %d, %s: %w: %q", round+1, side, err, sc.Text())
				}
				if !slices.Contains(names, r.Name) {
					names = append(names, r.Name)
				}
				all[side][r.Name] = append(all[side][r.Name], r)
			}
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done (load %s)\n", round+1, o.rounds, loadavg())
	}
	if o.out != "" {
		if err := writeBenchfmt(o.out, all, names); err != nil {
			return err
		}
	}
	fmt.Println("medians over rounds; ratio = stock / meshwaf (higher is faster); cpu = process CPU time per op")
	fmt.Printf("%-22s %10s %10s %7s | %10s %10s %7s | %13s\n", "shape", "stock", "meshwaf", "ratio", "stock cpu", "mwaf cpu", "ratio", "allocs s/m")
	rows := summarize(all, names)
	for _, r := range rows {
		fmt.Printf("%-22s %10s %10s %6.2fx | %10s %10s %6.2fx | %13s\n", r.name, dur(r.stockWall), dur(r.meshwafWall), r.wallRatio(),
			dur(r.stockCPU), dur(r.meshwafCPU), r.cpuRatio(), fmt.Sprintf("%d/%d", r.stockAllocs, r.meshwafAllocs))
	}
	fmt.Printf("load at end: %s\n", loadavg())
	if o.minRatio > 0 {
		if err := checkMinRatio(rows, o.minRatio); err != nil {
			return err
		}
		fmt.Printf("every wall-time ratio is at least %.2fx\n", o.minRatio)
	}
	return nil
}

// checkMinRatio fails, naming each shape and path, when a row's wall-time
// ratio (median stock / median meshwaf) is below min, or is not a number;
// no rows at all fail too (nothing was measured).
func checkMinRatio(rows []summaryRow, minRatio float64) error {
	if len(rows) == 0 {
		return errors.New("-min-ratio: no shape was measured on both sides")
	}
	var below []string
	for _, r := range rows {
		if q := r.wallRatio(); !(q >= minRatio) { // NaN fails too
			below = append(below, fmt.Sprintf("%s %.2fx", r.name, q))
		}
	}
	if len(below) > 0 {
		return fmt.Errorf("wall-time ratio (stock / meshwaf) below -min-ratio %.2fx: %s", minRatio, strings.Join(below, ", "))
	}
	return nil
}

// summaryRow is one line of the parent's table: medians over rounds.
type summaryRow struct {
	name                       string
	stockWall, meshwafWall     float64 // ns/op
	stockCPU, meshwafCPU       float64 // CPU ns/op
	stockAllocs, meshwafAllocs int64   // allocs/op of the first round
}

// wallRatio and cpuRatio are stock / meshwaf: above 1, meshwaf is faster.
func (r summaryRow) wallRatio() float64 { return r.stockWall / r.meshwafWall }
func (r summaryRow) cpuRatio() float64  { return r.stockCPU / r.meshwafCPU }

// summarize takes the medians per name, in names' order, of the names both
// sides have results for.
func summarize(all map[string]map[string][]result, names []string) []summaryRow {
	var rows []summaryRow
	for _, n := range names {
		s, m := all[sideStock][n], all[sideMeshwaf][n]
		if len(s) == 0 || len(m) == 0 {
			continue
		}
		wall := func(r result) float64 { return r.NsPerOp }
		cpu := func(r result) float64 { return r.CPUNsPerOp }
		rows = append(rows, summaryRow{name: n,
			stockWall: median(s, wall), meshwafWall: median(m, wall),
			stockCPU: median(s, cpu), meshwafCPU: median(m, cpu),
			stockAllocs: s[0].AllocsPerOp, meshwafAllocs: m[0].AllocsPerOp})
	}
	return rows
}

func writeBenchfmt(dir string, all map[string]map[string][]result, names []string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	var errs []error
	for side, rs := range all {
		var b strings.Builder
		fmt.Fprintf(&b, "goos: %s\ngoarch: %s\npkg: github.com/meshwaf/meshwaf/bench/coraza\n", runtime.GOOS, runtime.GOARCH)
		for _, n := range names {
			for _, r := range rs[n] {
				fmt.Fprintf(&b, "BenchmarkCheck/%s-%d\t%d\t%.0f ns/op\t%d B/op\t%d allocs/op\n",
					n, runtime.GOMAXPROCS(0), r.N, r.NsPerOp, r.BytesPerOp, r.AllocsPerOp)
			}
		}
		errs = append(errs, os.WriteFile(filepath.Join(dir, side+".txt"), []byte(b.String()), 0o600))
	}
	return errors.Join(errs...)
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func dur(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	default:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
