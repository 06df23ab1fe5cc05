package preselect

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	injection "github.com/corazawaf/libinjection-go"
	ahocorasick "github.com/petar-dambovaliev/aho-corasick"
)

// Matcher reports whether an operator matches one value exactly as
// Coraza's operator of the same rule does (captures aside). Like Screen it
// is an alias, so a plugin package can return one without importing this.
type Matcher = interface {
	Match(value string) bool
}

// Screen holds what many matchers can share about one value, computed
// once by Reset (for @rx: which literals occur in it). It is an alias of an
// unnamed interface so that a plugin package can implement ScreenedMatcher
// without importing this one.
type Screen = interface {
	Reset(value string)
}

// ScreenedMatcher is a Matcher that can use a Screen reset to the same
// value; it answers exactly as Match does.
type ScreenedMatcher interface {
	Matcher
	MatchScreened(value string, s Screen) bool
}

// MatcherFunc adapts a function to Matcher.
type MatcherFunc func(string) bool

// Match calls f.
func (f MatcherFunc) Match(v string) bool { return f(v) }

// errNotModelled marks an operator pre-selection does not answer for.
var errNotModelled = fmt.Errorf("operator not modelled")

// newMatcher builds the matcher of one rule's operator. file is the
// configuration file the rule came from (for @pmFromFile's data file).
func (b *builder) newMatcher(op, arg, file string) (Matcher, error) {
	if strings.Contains(arg, "%{") {
		return nil, fmt.Errorf("%w: macro in the argument", errNotModelled)
	}
	switch strings.ToLower(op) {
	case "rx":
		if b.opts.Regexp == nil {
			return nil, errNotModelled
		}
		return b.opts.Regexp(arg, b.memo)
	case "pm":
		return b.addPM(newPM(strings.Split(strings.ToLower(arg), " "), true)), nil
	case "pmfromfile", "pmf":
		return b.pmFromFile(arg, file)
	case "detectsqli":
		return detectSQLi, nil
	case "detectxss":
		return detectXSS, nil
	case "validatebyterange":
		return newByteRange(arg)
	case "contains":
		return MatcherFunc(func(v string) bool { return strings.Contains(v, arg) }), nil
	case "streq":
		return MatcherFunc(func(v string) bool { return v == arg }), nil
	case "beginswith":
		return MatcherFunc(func(v string) bool { return strings.HasPrefix(v, arg) }), nil
	case "endswith":
		return MatcherFunc(func(v string) bool { return strings.HasSuffix(v, arg) }), nil
	}
	return nil, fmt.Errorf("%w: @%s", errNotModelled, op)
}

// libinjection is @detectSQLi or @detectXSS: the function Coraza's operator
// calls. Select remembers its answer per distinct value.
type libinjection int

const (
	detectSQLi libinjection = iota
	detectXSS
	libinjections
)

func (l libinjection) Match(v string) bool {
	if l == detectSQLi {
		ok, _ := injection.IsSQLi(v)
		return ok
	}
	return injection.IsXSS(v)
}

// pm is @pm and @pmFromFile: the same automaton Coraza builds, with the
// same options, over the same lower-cased phrases.
type pm struct {
	ac      ahocorasick.AhoCorasick
	minLen  int
	phrases []string
	id      int // index in the plan's combined phrase automaton; -1: none
}

func newPM(phrases []string, dfa bool) *pm {
	builder := ahocorasick.NewAhoCorasickBuilder(ahocorasick.Opts{
		AsciiCaseInsensitive: true,
		MatchKind:            ahocorasick.LeftMostLongestMatch,
		DFA:                  dfa,
	})
	ac := builder.Build(phrases)
	minLen := 0
	for _, p := range phrases {
		if p == "" {
			minLen = 0
			break
		}
		if minLen == 0 || len(p) < minLen {
			minLen = len(p)
		}
	}
	return &pm{ac: ac, minLen: minLen, phrases: phrases, id: -1}
}

func (p *pm) Match(v string) bool {
	if len(v) < p.minLen {
		return false
	}
	return p.ac.Iter(v).Next() != nil
}

// pmFromFile reads the data file the way Coraza does: from the directory
// of the rule's own file in the embedded rule set. Rules from elsewhere are
// not modelled.
func (b *builder) pmFromFile(name, file string) (Matcher, error) {
	if b.opts.Root == nil || file == "" || path.IsAbs(name) || !strings.HasPrefix(file, b.opts.RootPrefix) {
		return nil, fmt.Errorf("%w: @pmFromFile outside the embedded rule set", errNotModelled)
	}
	data, err := fs.ReadFile(b.opts.Root, path.Join(path.Dir(file), name))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotModelled, err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		lines = append(lines, strings.ToLower(l))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotModelled, err)
	}
	return b.addPM(newPM(lines, false)), nil
}

// byteRange is @validateByteRange: a match is a byte outside the ranges.
type byteRange [256]bool

func newByteRange(arg string) (Matcher, error) {
	if arg == "" {
		return nil, errNotModelled // Coraza: an unconditional match
	}
	var r byteRange
	for _, part := range strings.Split(arg, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		z, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a < 0 || z > 255 || a > 255 || z < 0 {
			return nil, fmt.Errorf("%w: byte range %q", errNotModelled, part)
		}
		for i := a; i <= z; i++ {
			r[i] = true
		}
	}
	return &r, nil
}

func (r *byteRange) Match(v string) bool {
	for i := 0; i < len(v); i++ {
		if !r[v[i]] {
			return true
		}
	}
	return false
}

// phraseIndex answers every @pm and @pmFromFile rule of a plan in one pass
// over a value: one automaton over all their phrases (ASCII
// case-insensitive like theirs), reporting every occurrence, overlapping
// ones included. A phrase list matches a value exactly when one of its
// phrases occurs in it, which is what each operator's own leftmost-longest
// search answers by finding a first match.
type phraseIndex struct {
	ac     ahocorasick.AhoCorasick
	owners [][]int32 // phrase -> pm ids
	words  int
}

func (b *builder) addPM(p *pm) *pm {
	if p.minLen == 0 {
		return p // an empty phrase matches everything: left to Match
	}
	p.id = len(b.pms)
	b.pms = append(b.pms, p)
	return p
}

func newPhraseIndex(pms []*pm) *phraseIndex {
	if len(pms) == 0 {
		return nil
	}
	idx := map[string]int{}
	var phrases []string
	var owners [][]int32
	for _, p := range pms {
		for _, ph := range p.phrases {
			i, ok := idx[ph]
			if !ok {
				i = len(phrases)
				idx[ph] = i
				phrases = append(phrases, ph)
				owners = append(owners, nil)
			}
			if o := owners[i]; len(o) == 0 || o[len(o)-1] != int32(p.id) {
				owners[i] = append(owners[i], int32(p.id))
			}
		}
	}
	builder := ahocorasick.NewAhoCorasickBuilder(ahocorasick.Opts{
		AsciiCaseInsensitive: true,
		MatchKind:            ahocorasick.StandardMatch,
		DFA:                  true,
	})
	return &phraseIndex{ac: builder.Build(phrases), owners: owners, words: (len(pms) + 63) / 64}
}

// scan sets in set the ids of the phrase lists that occur in v.
func (x *phraseIndex) scan(v string, set []uint64) {
	clear(set)
	it := x.ac.IterOverlapping(v)
	for m := it.Next(); m != nil; m = it.Next() {
		for _, id := range x.owners[m.Pattern()] {
			set[id>>6] |= 1 << (id & 63)
		}
	}
}
