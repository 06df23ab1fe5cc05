//go:build !rx_nomemo

package rx

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestAutomatonScan checks the Aho-Corasick presence sets against a direct
// case-insensitive search, on random values over a small alphabet (so that
// literals overlap and share suffixes).
func TestAutomatonScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	const alphabet = "abcAB'(\x80\xbc "
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	var lits []string
	seen := map[string]bool{}
	for len(lits) < 200 {
		l := asciiLower(word(1 + rng.IntN(4)))
		if !seen[l] {
			seen[l] = true
			lits = append(lits, l)
		}
	}
	a := buildAutomaton(lits)
	for range 2000 {
		v := word(rng.IntN(24))
		set := make([]uint64, a.words)
		a.scan(v, set)
		for id, l := range lits {
			got := set[id>>6]&(1<<(id&63)) != 0
			if want := containsFold(v, l); got != want {
				t.Fatalf("value %q literal %q: scan %v, search %v", v, l, got, want)
			}
		}
	}
}
