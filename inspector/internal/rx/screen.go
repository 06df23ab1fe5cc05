//go:build !rx_nomemo

package rx

import "slices"

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

// union is the first clauses of several operators' prefilters as one mask
// per word of the presence set: when none of those literals occurs in a
// value, none of the operators can match it.
type union struct {
	masks []wordMask
	maxID int
	fold  bool
}

// NewUnion returns a test that answers, from a screen of a value, whether
// any of ops may match it; nil when some op has no literal prefilter in the
// memo (it must then be asked itself).
func NewUnion(ops []interface{ Match(string) bool }) interface {
	MayAny(s interface{ Reset(string) }) (may, known bool)
} {
	u := &union{}
	for _, op := range ops {
		p, ok := op.(interface{ prefilter() literalFilter })
		if !ok {
			return nil
		}
		mp, ok := p.prefilter().(*memoPrefilter)
		if !ok || len(mp.clauses) == 0 {
			return nil
		}
		u.fold = u.fold || mp.fold
		for _, l := range mp.clauses[0] {
			u.maxID = max(u.maxID, l.id)
			w, bit := l.id>>6, uint64(1)<<(l.id&63)
			if i := slices.IndexFunc(u.masks, func(m wordMask) bool { return m.w == w }); i >= 0 {
				u.masks[i].m |= bit
			} else {
				u.masks = append(u.masks, wordMask{w: w, m: bit})
			}
		}
	}
	return u
}

// MayAny reports whether a literal of some operator's first clause occurs
// in the screened value; known is false when the screen cannot say.
func (u *union) MayAny(s interface{ Reset(string) }) (may, known bool) {
	rs, _ := s.(*rxScreen)
	if rs == nil || rs.a == nil || rs.a.n <= u.maxID || (u.fold && !rs.ascii) {
		return true, false
	}
	for _, m := range u.masks {
		if rs.set[m.w]&m.m != 0 {
			return true, true
		}
	}
	return false, true
}
