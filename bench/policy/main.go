// Command policy measures `meshwaf policy generate` and `verify` on a
// synthetic ServiceGraph (by default 10,000 services and 100,000 edges) and
// prints the time and memory of each phase.
//
//	go run ./bench/policy                  # both phases, each in a fresh process
//	go run ./bench/policy -phase generate  # one phase in this process
//
// Each phase reads its inputs from files, as the CLI does: generate decodes
// the graph, plans and renders the YAML; verify decodes the graph and the
// policies, evaluates them and diffs the result against the plan.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench/policy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("policy", flag.ContinueOnError)
	services := fs.Int("services", 10000, "services in the synthetic graph")
	edges := fs.Int("edges", 100000, "edges in the synthetic graph")
	namespaces := fs.Int("namespaces", 100, "namespaces the services spread over")
	phase := fs.String("phase", "all", "all (each phase in a child process), prepare, generate or verify")
	dir := fs.String("dir", "", "directory of graph.yaml and policies.yaml (default: a temporary one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "meshwaf-bench-policy-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(d) }()
		*dir = d
	}
	graphFile := filepath.Join(*dir, "graph.yaml")
	policyFile := filepath.Join(*dir, "policies.yaml")
	switch *phase {
	case "prepare":
		return prepare(graphFile, policyFile, *services, *edges, *namespaces)
	case "generate":
		return measure("generate", func() error {
			_, err := generate(graphFile)
			return err
		})
	case "verify":
		return measure("verify", func() error { return verify(graphFile, policyFile) })
	case "all":
		self, err := os.Executable()
		if err != nil {
			return err
		}
		common := []string{"-dir", *dir, "-services", fmt.Sprint(*services), "-edges", fmt.Sprint(*edges), "-namespaces", fmt.Sprint(*namespaces)}
		for _, p := range []string{"prepare", "generate", "verify"} {
			cmd := exec.Command(self, append([]string{"-phase", p}, common...)...) // #nosec G204 -- this very binary
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("phase %s: %w", p, err)
			}
		}
		return nil
	}
	return fmt.Errorf("-phase %q: want all, prepare, generate or verify", *phase)
}

// prepare writes the synthetic graph and the policies generated from it.
func prepare(graphFile, policyFile string, services, edges, namespaces int) error {
	src := Synthetic(services, edges, namespaces, 1)
	if err := os.WriteFile(graphFile, src, 0o600); err != nil {
		return err
	}
	out, err := generate(graphFile)
	if err != nil {
		return err
	}
	fmt.Printf("graph: %d services, %d edges, %d namespaces; graph.yaml %.1f MiB, policies.yaml %.1f MiB\n",
		services, edges, namespaces, mib(uint64(len(src))), mib(uint64(len(out))))
	return os.WriteFile(policyFile, out, 0o600)
}

func generate(graphFile string) ([]byte, error) {
	g, err := meshpolicy.Load(graphFile)
	if err != nil {
		return nil, err
	}
	return istio.Generate(meshpolicy.NewPlan(g), istio.RenderOptions{})
}

func verify(graphFile, policyFile string) error {
	g, err := meshpolicy.Load(graphFile)
	if err != nil {
		return err
	}
	set, err := istio.LoadPolicies(policyFile)
	if err != nil {
		return err
	}
	plan := meshpolicy.NewPlan(g)
	got, _ := istio.Evaluate(plan, set.Policies, istio.EvalOptions{})
	if d := plan.Compare(plan.Expected(), got); d.Mismatch(true) {
		return fmt.Errorf("verify found %d missing and %d extra flows in generated policies", len(d.Missing), len(d.Extra))
	}
	return nil
}

// measure runs f and prints its wall time, the bytes it allocated, the
// peak heap seen by a sampler and the process's peak RSS.
func measure(name string, f func() error) error {
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var max uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > max {
				max = m.HeapInuse
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	err := f()
	elapsed := time.Since(start)
	close(stop)
	heap := <-peak
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	var ru syscall.Rusage
	if e := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); e != nil {
		err = errors.Join(err, e)
	}
	cpu := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	fmt.Printf("%-8s wall %6.2f s  cpu %6.2f s  allocated %7.1f MiB  peak heap in use %6.1f MiB  peak RSS %6.1f MiB  (GOMAXPROCS %d, load %s)\n",
		name, elapsed.Seconds(), cpu.Seconds(), mib(after.TotalAlloc-before.TotalAlloc), mib(heap), mib(uint64(ru.Maxrss)*1024),
		runtime.GOMAXPROCS(0), loadAvg())
	return err
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// Synthetic is a valid graph of n services spread over namespaces, with
// edges distinct (from, to, port) triples; a tenth of the edges to HTTP
// ports narrow methods and paths, half of the services are inspected, a
// twentieth take ingress traffic, and a scraper reaches metrics ports.
func Synthetic(n, edges, namespaces int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7)) // #nosec G404 -- a reproducible synthetic graph, not a secret
	var b bytes.Buffer
	b.WriteString("apiVersion: meshwaf.io/v1alpha1\nkind: ServiceGraph\nmetadata: {name: synthetic}\nspec:\n")
	b.WriteString("  settings:\n    scraper: {namespace: monitoring, serviceAccount: prometheus}\n  services:\n")
	ports := make([][]int, n)
	http := make([]bool, n)
	for i := range n {
		ns := i % namespaces
		http[i] = i%4 != 0
		proto := "TCP"
		if http[i] {
			proto = "HTTP"
		}
		ports[i] = []int{8080}
		fmt.Fprintf(&b, "  - {name: s%d, namespace: ns%d, ports: [{port: 8080, protocol: %s}", i, ns, proto)
		if i%10 == 0 {
			fmt.Fprintf(&b, ", {port: 9102, protocol: HTTP, metrics: true}")
		}
		if i%3 == 0 {
			ports[i] = append(ports[i], 8443)
			fmt.Fprintf(&b, ", {port: 8443, protocol: %s}", proto)
		}
		fmt.Fprintf(&b, "], ingress: %v, inspect: %v}\n", i%20 == 0, i%2 == 0)
	}
	b.WriteString("  edges:\n")
	seen := make(map[[3]int]bool, edges)
	for len(seen) < edges {
		from, to := r.IntN(n), r.IntN(n)
		port := ports[to][r.IntN(len(ports[to]))]
		k := [3]int{from, to, port}
		if seen[k] {
			continue
		}
		seen[k] = true
		fmt.Fprintf(&b, "  - {from: ns%d/s%d, to: ns%d/s%d, ports: [%d]", from%namespaces, from, to%namespaces, to, port)
		if http[to] && r.IntN(10) == 0 {
			b.WriteString(`, methods: [GET, POST], paths: ["/api/*"]`)
		}
		b.WriteString("}\n")
	}
	return b.Bytes()
}

// loadAvg is the 1-minute load average, to judge wall times on a shared machine.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
