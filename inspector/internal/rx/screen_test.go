//go:build !rx_nomemo

package rx

import (
	"regexp"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/stretchr/testify/require"
)

// TestMatchScreenedIsMatch: for every CRS @rx pattern and the DFA test's
// values (plus some non-ASCII ones), the answer through a screen of the
// value is the operator's own Match, which is Go's regexp's.
func TestMatchScreenedIsMatch(t *testing.T) {
	values := append(dfaInputs(300), "Ünïcode <script>", "K\u212a s\u017f", "\xff\xfe binary", "")
	patterns := crsRxPatterns(t)
	ops := make([]plugintypes.Operator, len(patterns))
	for i, p := range patterns {
		var err error
		ops[i], err = newRxOperator(plugintypes.OperatorOptions{Arguments: p})
		require.NoError(t, err)
	}
	rebuild() // the automaton knows every literal, as after a compile
	screens := make([]interface{ Reset(string) }, len(values))
	for i, v := range values {
		screens[i] = NewScreen()
		screens[i].Reset(v)
	}
	screened := 0
	for pi, p := range patterns {
		op := ops[pi]
		m := op.(interface {
			Match(string) bool
			MatchScreened(string, interface{ Reset(string) }) bool
		})
		var re *regexp.Regexp
		if o, ok := op.(*rxOperator); ok {
			re = o.re
		}
		for i, v := range values {
			want := m.Match(v)
			require.Equal(t, want, m.MatchScreened(v, screens[i]), "pattern %q value %q", p, v)
			if re != nil {
				require.Equal(t, re.MatchString(v), want, "pattern %q value %q", p, v)
			}
			if reject, known := screenRejects(op.(interface{ prefilter() literalFilter }).prefilter(), v, screens[i]); known && reject {
				screened++
			}
		}
	}
	require.Positive(t, screened, "the screen never rejected a value: it tests nothing")
	t.Logf("%d patterns x %d values, %d answered by the screen alone", len(patterns), len(values), screened)
}

// TestUnionNeverHidesAMatch: when a union of operators says no literal any
// of them needs is in a screened value, none of them matches it.
func TestUnionNeverHidesAMatch(t *testing.T) {
	values := append(dfaInputs(300), "Ünïcode <script>", "K\u212a s\u017f", "")
	patterns := crsRxPatterns(t)
	var ops []interface{ Match(string) bool }
	for _, p := range patterns {
		op, err := newRxOperator(plugintypes.OperatorOptions{Arguments: p})
		require.NoError(t, err)
		if _, ok := op.(interface{ prefilter() literalFilter }).prefilter().(*memoPrefilter); ok {
			ops = append(ops, op.(interface{ Match(string) bool }))
		}
	}
	rebuild()
	require.Nil(t, NewUnion([]interface{ Match(string) bool }{MatcherFunc(nil)}), "an operator without a prefilter must be asked itself")
	rejected := 0
	for size := 1; size <= len(ops); size *= 3 {
		for start := 0; start+size <= len(ops); start += size {
			group := ops[start : start+size]
			u := NewUnion(group)
			require.NotNil(t, u)
			for _, v := range values {
				s := NewScreen()
				s.Reset(v)
				may, known := u.MayAny(s)
				if !known || may {
					continue
				}
				rejected++
				for _, op := range group {
					require.False(t, op.Match(v), "the union hid a match of %v on %q", op, v)
				}
			}
		}
	}
	require.Positive(t, rejected, "the union never answered no: it tests nothing")
	t.Logf("%d (group, value) pairs answered no", rejected)
}

// MatcherFunc is a Match without a prefilter.
type MatcherFunc func(string) bool

func (f MatcherFunc) Match(v string) bool { return f(v) }
