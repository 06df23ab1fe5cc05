//go:build !rx_nomemo

package inspector

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
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

// TestRxCaptureAndFold covers the operator's edge cases directly: the
// Kelvin sign under (?i), invalid UTF-8, and a prefilter-rejected value.
func TestRxCaptureAndFold(t *testing.T) {
	op, err := newRxOperator(rxOpts(`(?i)(ok)`))
	if err != nil {
		t.Fatal(err)
	}
	tx := &fakeTx{}
	if !op.Evaluate(tx, "o\u212a") { // Kelvin sign folds to k
		t.Fatal("(?i)ok must match o + Kelvin sign")
	}
	if tx.caps[0] != "o\u212a" || tx.caps[1] != "o\u212a" {
		t.Fatalf("captures %q", tx.caps)
	}
	if op.Evaluate(&fakeTx{}, "nothing here") {
		t.Fatal("matched without the literal")
	}
	bin, err := newRxOperator(rxOpts(`\xbc[^>\xbe]*[>\xbe]`))
	if err != nil {
		t.Fatal(err)
	}
	if !bin.Evaluate(&fakeTx{}, "a\xbcb\xbe") || bin.Evaluate(&fakeTx{}, "a<b>") {
		t.Fatal("binary pattern")
	}
}

// fakeTx is the part of a transaction the operator uses: capturing on.
type fakeTx struct {
	plugintypes.TransactionState
	caps [maxCaptures]string
}

func (*fakeTx) Capturing() bool                    { return true }
func (f *fakeTx) CaptureField(i int, value string) { f.caps[i] = value }

func rxOpts(pattern string) plugintypes.OperatorOptions {
	return plugintypes.OperatorOptions{Arguments: pattern}
}
