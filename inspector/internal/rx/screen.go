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

// MatchScreened is Match with the literal test answered from s, a screen
// of the same value.
func (o *rxOperator) MatchScreened(value string, s interface{ Reset(string) }) bool {
	mp, ok := o.pf.(*memoPrefilter)
	rs, _ := s.(*rxScreen)
	if !ok || rs == nil || rs.a == nil || rs.a.n <= mp.maxID || (mp.fold && !rs.ascii) {
		return o.Match(value)
	}
	for i := range mp.screen {
		if !mp.screen[i].occursIn(value, rs.set) {
			return false
		}
	}
	if o.dfa != nil {
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
	mp, ok := o.pf.(*memoPrefilter)
	rs, _ := s.(*rxScreen)
	if !ok || rs == nil || rs.a == nil || rs.a.n <= mp.maxID || (mp.fold && !rs.ascii) {
		return o.Match(value)
	}
	for i := range mp.screen {
		if !mp.screen[i].occursIn(value, rs.set) {
			return false
		}
	}
	return o.re.MatchString(value)
}
