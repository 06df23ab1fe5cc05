package preselect

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPhraseIndexAgreesWithEachPM: the combined phrase automaton reports a
// phrase list for a value exactly when that list's own @pm automaton (the
// one Coraza builds) finds a match.
func TestPhraseIndexAgreesWithEachPM(t *testing.T) {
	b := &builder{}
	lists := [][]string{
		{"document.cookie", "document.write", ".innerhtml", "eval("},
		{"/etc/passwd", "/etc/shadow", "boot.ini", "passwd"},
		{"select", "union", "sleep(", "benchmark("},
		{"ab", "abc", "bc", "c"},
		{"é", "straße", "\x00x"},
	}
	var pms []*pm
	for i, l := range lists {
		pms = append(pms, b.addPM(newPM(l, i%2 == 0)))
	}
	x := newPhraseIndex(b.pms)
	set := make([]uint64, x.words)
	alphabet := []string{"a", "b", "c", "A", "B", "C", "/etc/", "PASSWD", "Document.", "cookie", "é", "É", "ß", "\x00", "x", "union", "SeLeCt", " ", "eval", "(", ".innerHTML"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var sb strings.Builder
		for range rng.IntN(8) {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		v := sb.String()
		x.scan(v, set)
		for _, p := range pms {
			got := set[p.id>>6]&(1<<(p.id&63)) != 0
			require.Equal(t, p.Match(v), got, "value %q, phrases %q", v, p.phrases)
		}
	}
}
