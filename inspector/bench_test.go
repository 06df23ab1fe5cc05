package inspector

import (
	"context"
	"testing"
)

// benchCases returns the rows of the case table that carry a bench name.
func benchCases(b *testing.B) []inspectCase {
	b.Helper()
	var out []inspectCase
	for _, tc := range cases() {
		if tc.bench != "" {
			out = append(out, tc)
		}
	}
	if len(out) == 0 {
		b.Fatal("no benchmark rows in the case table")
	}
	return out
}

// checkBenchVerdict fails the benchmark if the row's outcome changed, so a
// benchmark never measures a different path than the table test checks.
func checkBenchVerdict(b *testing.B, rs *RuleSet, tc inspectCase) {
	b.Helper()
	v, err := rs.Inspect(context.Background(), tc.req, tc.profile)
	if err != nil {
		b.Fatal(err)
	}
	if v.Decision != tc.want {
		b.Fatalf("%s: decision %s, want %s (rules %v)", tc.name, v.Decision, tc.want, v.RuleIDs())
	}
}

// BenchmarkInspect runs one inspection per iteration: GET (a page load with
// 10 headers), JSON1KiB (a 1 KiB JSON POST with 54 leaves) and SQLi (the
// seed SQLi GET, denied).
func BenchmarkInspect(b *testing.B) {
	rs := testRuleSet(b)
	for _, tc := range benchCases(b) {
		b.Run(tc.bench, func(b *testing.B) {
			checkBenchVerdict(b, rs, tc)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := rs.Inspect(ctx, tc.req, tc.profile); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInspectParallel is BenchmarkInspect from GOMAXPROCS goroutines.
func BenchmarkInspectParallel(b *testing.B) {
	rs := testRuleSet(b)
	for _, tc := range benchCases(b) {
		b.Run(tc.bench, func(b *testing.B) {
			checkBenchVerdict(b, rs, tc)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := rs.Inspect(ctx, tc.req, tc.profile); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
