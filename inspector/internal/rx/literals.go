package rx

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// A prefilter is a condition that every value matching a pattern meets: an
// AND of clauses, each an OR of literals that must occur in the value. It is
// derived from the pattern's syntax tree, so it never rejects a value the
// pattern matches:
//
//   - a literal run of ASCII characters must occur as those bytes (Go's
//     regexp reads an invalid UTF-8 byte as U+FFFD, never as ASCII);
//   - under (?i) an ASCII literal may also match non-ASCII runes (k and the
//     Kelvin sign, s and the long s), so case-folded literals are compared
//     ASCII-case-insensitively and only for values that are all ASCII: other
//     values skip the prefilter and go to the regular expression.
type prefilter struct {
	clauses []clause
	fold    bool // some literal is case-folded
}

// literal is one string that may be necessary for a match. With fold set, s
// is lower case and matches ASCII-case-insensitively.
type literal struct {
	s    string
	fold bool
}

// clause is satisfied when one of its literals occurs in the value.
type clause []literal

const (
	maxClassLiterals   = 6 // a character class becomes an OR of up to this many bytes
	maxPrefilterChecks = 3 // clauses tested per call, strongest first
)

// newPrefilter derives the prefilter of expr (with its flags), or returns
// nil when no literal is necessary or expr does not parse. With byteMode,
// expr is a binaryregexp pattern: runes up to 0xFF stand for single bytes,
// so case-sensitive literals and classes may hold bytes 0x80-0xFF too.
func newPrefilter(expr string, byteMode bool) *prefilter {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	limit := rune(utf8.RuneSelf)
	if byteMode && isASCII(expr) {
		// Only escapes (\xHH, \x{HH}) name bytes above 0x7F: raw
		// non-ASCII pattern text is left to the regular expression.
		limit = 0x100
	}
	cs := necessary(re.Simplify(), limit)
	if len(cs) == 0 {
		return nil
	}
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b clause) int { return strength(b) - strength(a) })
	if len(cs) > maxPrefilterChecks {
		cs = cs[:maxPrefilterChecks]
	}
	p := &prefilter{clauses: cs}
	for _, c := range cs {
		for _, l := range c {
			p.fold = p.fold || l.fold
		}
	}
	return p
}

// necessary returns clauses that every match of re satisfies (nil: none).
// Runes from limit up are never literals (limit is 0x80 for UTF-8
// patterns, 0x100 for byte patterns).
func necessary(re *syntax.Regexp, limit rune) []clause {
	switch re.Op {
	case syntax.OpLiteral:
		return literalClauses(re.Rune, re.Flags&syntax.FoldCase != 0, limit)
	case syntax.OpCharClass:
		return classClause(re.Rune, limit)
	case syntax.OpCapture, syntax.OpPlus:
		return necessary(re.Sub[0], limit)
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return necessary(re.Sub[0], limit)
		}
	case syntax.OpConcat:
		var out []clause
		for _, s := range re.Sub {
			out = append(out, necessary(s, limit)...)
		}
		return out
	case syntax.OpAlternate:
		var union clause
		for _, s := range re.Sub {
			b := best(necessary(s, limit))
			if b == nil {
				return nil
			}
			for _, l := range b {
				if !slices.Contains(union, l) {
					union = append(union, l)
				}
			}
		}
		return []clause{union}
	}
	return nil
}

// literalClauses turns a literal into one clause per run of runes below
// limit (below 0x80 when case-folded).
func literalClauses(runes []rune, fold bool, limit rune) []clause {
	if fold {
		limit = utf8.RuneSelf
	}
	var out []clause
	var b strings.Builder
	flush := func() {
		if b.Len() == 0 {
			return
		}
		s := b.String()
		b.Reset()
		l := literal{s: s}
		if fold && hasASCIILetter(s) {
			l = literal{s: asciiLower(s), fold: true}
		}
		out = append(out, clause{l})
	}
	for _, r := range runes {
		if r >= limit {
			flush()
			continue
		}
		b.WriteByte(byte(r))
	}
	flush()
	return out
}

// classClause turns a small class of runes below limit into an OR of
// one-byte literals.
func classClause(ranges []rune, limit rune) []clause {
	var c clause
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if hi >= limit || int(hi-lo)+1+len(c) > maxClassLiterals {
			return nil
		}
		for r := lo; r <= hi; r++ {
			c = append(c, literal{s: string([]byte{byte(r)})})
		}
	}
	if len(c) == 0 {
		return nil
	}
	return []clause{c}
}

func hasASCIILetter(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// strength ranks a clause by its shortest literal, then by fewer literals.
func strength(c clause) int {
	if len(c) == 0 {
		return -1 << 30
	}
	m := len(c[0].s)
	for _, l := range c[1:] {
		m = min(m, len(l.s))
	}
	return m*64 - min(len(c), 63)
}

func best(cs []clause) clause {
	var b clause
	for _, c := range cs {
		if b == nil || strength(c) > strength(b) {
			b = c
		}
	}
	return b
}

// mayMatch reports false only when no value with these bytes can match.
func (p *prefilter) mayMatch(value string) bool {
	if p.fold && !isASCII(value) {
		return true
	}
	for _, c := range p.clauses {
		if !c.occursIn(value) {
			return false
		}
	}
	return true
}

func (c clause) occursIn(value string) bool {
	for _, l := range c {
		if l.fold {
			if containsFold(value, l.s) {
				return true
			}
		} else if strings.Contains(value, l.s) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// containsFold reports whether s contains lower (lower-case ASCII) with
// ASCII case folding.
func containsFold(s, lower string) bool {
	n := len(lower)
	if n == 0 {
		return true
	}
	c0 := lower[0]
	c1 := c0
	if c0 >= 'a' && c0 <= 'z' {
		c1 = c0 - ('a' - 'A')
	}
	for i := 0; i+n <= len(s); i++ {
		if c := s[i]; c != c0 && c != c1 {
			continue
		}
		if hasPrefixFold(s[i+1:], lower[1:]) {
			return true
		}
	}
	return false
}

func hasPrefixFold(s, lower string) bool {
	if len(s) < len(lower) {
		return false
	}
	for j := 0; j < len(lower); j++ {
		c := s[j]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[j] {
			return false
		}
	}
	return true
}

// asciiLower lower-cases A-Z only and keeps every other byte, valid UTF-8
// or not (strings.ToLower would turn invalid bytes into U+FFFD).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
