package inspector

import "testing"

// BenchmarkHeaderBomb inspects GETs with the default profile carrying
// 10,000 cookies (89 KB) in one Cookie header or over 20, and 5,000
// headers, all denied by the arguments guard (99001). It reports peak RSS
// like BenchmarkBodyBomb.
//
//	go test -run '^$' -bench HeaderBomb -benchmem ./inspector
func BenchmarkHeaderBomb(b *testing.B) {
	rs := testRuleSet(b)
	for _, bc := range []struct {
		name  string
		extra []string
	}{
		{"cookies-10000-one-header", []string{"Cookie", cookieBomb(10000)}},
		{"cookies-10000-over-20-headers", cookieHeaders(10000, 20)},
		{"headers-5000", headerBomb(5000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchRefused(b, rs, get("HTTP/1.1", "/", bc.extra...), 0)
		})
	}
}

// BenchmarkHeaderAtLimit inspects GETs of exactly argumentsLimit (1000)
// cookies, or headers, which the rules inspect: what one check can cost
// within the limit.
//
//	go test -run '^$' -bench HeaderAtLimit -benchmem ./inspector
func BenchmarkHeaderAtLimit(b *testing.B) {
	rs := testRuleSet(b)
	for _, bc := range []struct {
		name  string
		extra []string
	}{
		{"cookies-1000", []string{"Cookie", cookieBomb(DefaultArgumentsLimit)}},
		{"headers-1000", headerBomb(DefaultArgumentsLimit - 4)}, // get has 4
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchAllowed(b, rs, get("HTTP/1.1", "/", bc.extra...), 0)
		})
	}
}
