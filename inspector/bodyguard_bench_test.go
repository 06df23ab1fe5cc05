package inspector

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
)

// BenchmarkBodyBomb inspects the bodies of issue 11 with the default
// profile: 10,000 one-byte multipart fields (870 KB) and 50,000 XML leaf
// elements (500 KB), both denied by the arguments guard (99001). Besides
// time and allocations per check it reports the process's peak RSS over
// the benchmark (peak-RSS-MiB, Linux only) next to its RSS before
// (base-RSS-MiB, mostly the compiled rule set).
//
//	go test -run '^$' -bench BodyBomb -benchmem ./inspector
func BenchmarkBodyBomb(b *testing.B) {
	rs := testRuleSet(b)
	for _, bc := range []struct{ name, ct, body string }{
		{"multipart-10000-parts", multipartCT, multipartBomb(10000)},
		{"xml-50000-elements", "application/xml", xmlLeaves(50000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchRefused(b, rs, send("POST", "HTTP/1.1", "/upload", bc.ct, bc.body), len(bc.body))
		})
	}
}

// BenchmarkBodyAtLimit inspects bodies of exactly argumentsLimit (1000)
// one-byte arguments, which Coraza parses and the rules inspect: what one
// check can cost within the limit.
//
//	go test -run '^$' -bench BodyAtLimit -benchmem ./inspector
func BenchmarkBodyAtLimit(b *testing.B) {
	rs := testRuleSet(b)
	for _, bc := range []struct{ name, ct, body string }{
		{"multipart-1000-parts", multipartCT, multipartBomb(DefaultArgumentsLimit)},
		{"xml-1000-nodes", "application/xml", `<r id="x">` + xmlLeaves(499)[3:]},
		{"form-1000-args", formCT, manyArgs(DefaultArgumentsLimit, -1)},
		{"json-1000-values", "application/json", jsonArray(DefaultArgumentsLimit)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchAllowed(b, rs, send("POST", "HTTP/1.1", "/upload", bc.ct, bc.body), len(bc.body))
		})
	}
}

// benchRefused benchmarks the inspection of r, which the arguments guard
// (99001) must deny, with the process's peak RSS over the benchmark
// (peak-RSS-MiB, Linux only) next to its RSS before (base-RSS-MiB). n is
// the bytes r carries beyond a plain GET, for b.SetBytes (0: none).
func benchRefused(b *testing.B, rs *RuleSet, r Request, n int) {
	b.Helper()
	ctx := context.Background()
	v, err := rs.Inspect(ctx, r, "")
	if err != nil {
		b.Fatal(err)
	}
	if v.Decision != Deny || v.InterruptingRule != RuleArgumentsLimit {
		b.Fatalf("decision %s by %d, want deny by %d", v.Decision, v.InterruptingRule, RuleArgumentsLimit)
	}
	runtime.GC()
	debug.FreeOSMemory()
	base, peakOK := resetPeakRSS()
	if n > 0 {
		b.SetBytes(int64(n))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := rs.Inspect(ctx, r, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if peak, ok := procStatusKiB("VmHWM"); ok && peakOK {
		b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
		b.ReportMetric(float64(base)/1024, "base-RSS-MiB")
	}
}

// benchAllowed benchmarks the inspection of r, which must be allowed (n as
// for benchRefused).
func benchAllowed(b *testing.B, rs *RuleSet, r Request, n int) {
	b.Helper()
	ctx := context.Background()
	v, err := rs.Inspect(ctx, r, "")
	if err != nil {
		b.Fatal(err)
	}
	if v.Decision != Allow {
		b.Fatalf("decision %s by %d, want allow", v.Decision, v.InterruptingRule)
	}
	if n > 0 {
		b.SetBytes(int64(n))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rs.Inspect(ctx, r, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// resetPeakRSS resets the process's peak RSS (VmHWM) to its current RSS
// and returns that, in KiB.
func resetPeakRSS() (int64, bool) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0, false
	}
	return procStatusKiB("VmRSS")
}

// procStatusKiB reads a "Name:   123 kB" line of /proc/self/status.
func procStatusKiB(name string) (int64, bool) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(raw) {
		v, ok := bytes.CutPrefix(line, []byte(name+":"))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
		return n, err == nil
	}
	return 0, false
}
