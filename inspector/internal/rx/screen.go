//go:build !rx_nomemo

package rx

// rxScreen is the literal presence of one value under the literal memo's
// automaton, computed once by rule pre-selection and checked against every
// @rx rule that sees the value.
type rxScreen struct {
	a     *automaton
	set   []uint64
	ascii bool
}

// NewScreen returns a screen for MatchScreened (rule pre-selection resets
// one per distinct value).
func NewScreen() interface{ Reset(string) } { return &rxScreen{} }

// Reset scans value.
func (s *rxScreen) Reset(value string) {
	s.a = snapshot()
	s.ascii = isASCII(value)
	if s.a == nil {
		return
	}
	if cap(s.set) < s.a.words {
		s.set = make([]uint64, s.a.words)
	}
	s.set = s.set[:s.a.words]
	clear(s.set)
	s.a.scan(value, s.set)
}

// screenRejects reports whether s, a screen of value, shows that pf's
// literals are not all in value; known is false when s cannot answer for
// pf (no memo prefilter, literals newer than the screen's automaton,
// case-folded literals and a value that is not ASCII).
func screenRejects(pf literalFilter, value string, s interface{ Reset(string) }) (reject, known bool) {
	mp, ok := pf.(*memoPrefilter)
	rs, _ := s.(*rxScreen)
	if !ok || rs == nil || rs.a == nil || rs.a.n <= mp.maxID || (mp.fold && !rs.ascii) {
		return false, false
	}
	for i := range mp.screen {
		if !mp.screen[i].occursIn(value, rs.set) {
			return true, true
		}
	}
	return false, true
}

// MatchScreened is Match with the literal test answered from s, a screen
// of the same value.
func (o *rxOperator) MatchScreened(value string, s interface{ Reset(string) }) bool {
	reject, known := screenRejects(o.pf, value, s)
	if reject {
		return false
	}
	if known && o.dfa != nil {
		switch o.dfa.Match(value) {
		case dfaNoMatch:
			return false
		case dfaMatch:
			return true
		}
	}
	return o.Match(value)
}

// MatchScreened is Match with the literal test answered from s.
func (o *binaryRxOperator) MatchScreened(value string, s interface{ Reset(string) }) bool {
	reject, known := screenRejects(o.pf, value, s)
	if reject {
		return false
	}
	if known {
		return o.re.MatchString(value)
	}
	return o.Match(value)
}

func (o *rxOperator) prefilter() literalFilter       { return o.pf }
func (o *binaryRxOperator) prefilter() literalFilter { return o.pf }
