// Command profiles measures the memory of N compiled profiles: the heap in
// use after a GC and the process RSS, so an operator can size meshwaf for
// many profiles. Usage: go run ./bench/profiles -n 1,10,50
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/meshwaf/meshwaf/inspector"
)

func main() {
	counts := flag.String("n", "1,10,50", "comma-separated profile counts to measure, each in a fresh child process")
	one := flag.Int("one", 0, "measure exactly this many profiles in this process (used by the parent)")
	flag.Parse()
	if *one > 0 {
		if err := measure(*one); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fmt.Printf("%-9s %-12s %-14s %-12s\n", "profiles", "compile", "heap in use", "RSS")
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bad count %q\n", s)
			os.Exit(2)
		}
		// A fresh process per count, so RSS is not inherited from the last.
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out, err := runChild(exe, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(out)
	}
}

// profilesOf returns n profiles that differ the way real ones do:
// paranoia level, mode, thresholds and exclusions.
func profilesOf(n int) (inspector.Profile, []inspector.Profile) {
	extra := make([]inspector.Profile, 0, n-1)
	for i := 1; i < n; i++ {
		p := inspector.Profile{
			Name:                    fmt.Sprintf("p%02d", i),
			ParanoiaLevel:           1 + i%4,
			InboundAnomalyThreshold: 5 + i%3,
		}
		if i%2 == 0 {
			p.Mode = inspector.ModeDetect
		}
		if i%3 == 0 {
			p.Exclusions = []inspector.Exclusion{{Tags: []string{"attack-xss"}, PathPrefix: fmt.Sprintf("/api/v%d/cms", i), Methods: []string{"POST"}}}
		}
		extra = append(extra, p)
	}
	return inspector.Profile{}, extra
}

func measure(n int) error {
	def, extra := profilesOf(n)
	start := time.Now()
	rs, err := inspector.Compile(def, extra...)
	if err != nil {
		return err
	}
	took := time.Since(start)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := vmRSS()
	if err != nil {
		return err
	}
	fmt.Printf("%-9d %-12s %-14s %-12s\n", len(rs.Profiles()), took.Round(time.Millisecond), mib(ms.HeapInuse), mib(rss))
	runtime.KeepAlive(rs)
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// vmRSS reads the resident set size from /proc/self/status.
func vmRSS() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}
