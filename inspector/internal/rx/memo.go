//go:build !rx_nomemo

package rx

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// The literal memo: every prefilter literal of every @rx pattern compiled in
// the process gets an id in one registry, and one Aho-Corasick automaton
// over all of them (ASCII-lower-cased) finds, in a single pass over a
// value, which literals occur in it. The answer depends on the value's
// bytes only, so it is kept in a small per-P cache keyed by the value's
// contents and reused by every later rule that looks at the same value, in
// this transaction or another: one scan per value instead of one literal
// search per rule and literal.
//
// Correctness does not depend on the memo being fresh: a literal the
// current automaton does not know (registered by a compile that happened
// after it was built) is searched directly, and a rebuild is started.

// litRegistry assigns ids to literals (the lower-cased form; case-sensitive
// literals keep their exact form for the check that follows a hit).
var litRegistry = struct {
	sync.Mutex
	ids   map[string]int
	lower []string
}{ids: map[string]int{}}

// registerLiteral returns the id of l's lower-cased form.
func registerLiteral(l literal) int {
	key := asciiLower(l.s)
	litRegistry.Lock()
	defer litRegistry.Unlock()
	if id, ok := litRegistry.ids[key]; ok {
		return id
	}
	id := len(litRegistry.lower)
	litRegistry.ids[key] = id
	litRegistry.lower = append(litRegistry.lower, key)
	return id
}

// automaton is a dense Aho-Corasick DFA over byte classes of lower-cased
// input.
type automaton struct {
	n       int // literals known
	words   int // uint64 words per presence set
	classes [256]uint8
	nclass  int
	delta   []int32 // state*nclass + class -> state
	own     [][]int32
	dict    []int32 // nearest suffix state with outputs, or -1
	hasOut  []bool
}

var (
	current    atomic.Pointer[automaton]
	rebuilding atomic.Bool
)

// snapshot returns the automaton, building the first one synchronously.
func snapshot() *automaton {
	if a := current.Load(); a != nil {
		return a
	}
	rebuild()
	return current.Load()
}

// refresh starts one background rebuild (literals were added since the
// current automaton was built).
func refresh() {
	if rebuilding.CompareAndSwap(false, true) {
		go func() {
			defer rebuilding.Store(false)
			rebuild()
		}()
	}
}

func rebuild() {
	litRegistry.Lock()
	lits := slices.Clone(litRegistry.lower)
	litRegistry.Unlock()
	if a := current.Load(); a != nil && a.n >= len(lits) {
		return
	}
	current.Store(buildAutomaton(lits))
}

func buildAutomaton(lits []string) *automaton {
	a := &automaton{n: len(lits), words: (len(lits) + 63) / 64}
	// Byte classes: one per byte used in a literal, 0 for the rest;
	// upper-case ASCII shares its lower-case letter's class.
	for _, l := range lits {
		for i := 0; i < len(l); i++ {
			if a.classes[l[i]] == 0 {
				a.nclass++
				a.classes[l[i]] = uint8(a.nclass)
			}
		}
	}
	a.nclass++
	for c := 'A'; c <= 'Z'; c++ {
		a.classes[c] = a.classes[c+('a'-'A')]
	}
	nc := a.nclass
	// Trie.
	a.delta = make([]int32, nc)
	a.own = [][]int32{nil}
	for i := range a.delta {
		a.delta[i] = -1
	}
	for id, l := range lits {
		s := int32(0)
		for i := 0; i < len(l); i++ {
			c := int(a.classes[l[i]])
			next := a.delta[int(s)*nc+c]
			if next < 0 {
				next = int32(len(a.own))
				a.own = append(a.own, nil)
				for range nc {
					a.delta = append(a.delta, -1)
				}
				a.delta[int(s)*nc+c] = next
			}
			s = next
		}
		a.own[s] = append(a.own[s], int32(id))
	}
	// Failure links in breadth-first order, turned into a full DFA.
	states := len(a.own)
	fail := make([]int32, states)
	a.dict = make([]int32, states)
	a.hasOut = make([]bool, states)
	a.dict[0] = -1
	queue := make([]int32, 0, states)
	for c := range nc {
		if t := a.delta[c]; t > 0 {
			fail[t] = 0
			a.dict[t] = -1
			queue = append(queue, t)
		} else {
			a.delta[c] = 0
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for c := range nc {
			t := a.delta[int(s)*nc+c]
			f := a.delta[int(fail[s])*nc+c]
			if t < 0 {
				a.delta[int(s)*nc+c] = f
				continue
			}
			fail[t] = f
			if len(a.own[f]) > 0 {
				a.dict[t] = f
			} else {
				a.dict[t] = a.dict[f]
			}
			queue = append(queue, t)
		}
	}
	for s := range states {
		a.hasOut[s] = len(a.own[s]) > 0 || a.dict[s] >= 0
	}
	return a
}

// scan returns the set of literals that occur in value, case-insensitively.
func (a *automaton) scan(value string, set []uint64) {
	nc := a.nclass
	s := int32(0)
	for i := 0; i < len(value); i++ {
		s = a.delta[int(s)*nc+int(a.classes[value[i]])]
		if !a.hasOut[s] {
			continue
		}
		for t := s; t >= 0; t = a.dict[t] {
			for _, id := range a.own[t] {
				set[id>>6] |= 1 << (id & 63)
			}
		}
	}
}

// valueMemo caches presence sets by value contents for one automaton.
// Rules walk all values of a collection one rule after another, so the
// memo must hold a whole transaction's values to be hit: it is bounded by
// bytes (a 128 KiB JSON body has about 7,000 values), and the sets are cut
// from one slab instead of allocated one by one.
type valueMemo struct {
	a     *automaton
	sets  map[string][]uint64
	slab  []uint64
	bytes int
}

const (
	memoMaxBytes = 4 << 20  // per P; sync.Pool drops idle memos at GC
	memoMaxValue = 64 << 10 // longer values are scanned directly
	memoSlab     = 64 << 10 // words per slab allocation
)

var memoPool = sync.Pool{New: func() any { return &valueMemo{} }}

// presence returns the literal set of value under a, from the memo or by a
// scan. The slice is owned by the memo: read it before releasing m.
func (m *valueMemo) presence(a *automaton, value string) []uint64 {
	if m.a != a || m.bytes >= memoMaxBytes {
		m.a, m.sets, m.slab, m.bytes = a, make(map[string][]uint64, 256), nil, 0
	}
	if set, ok := m.sets[value]; ok {
		return set
	}
	if len(m.slab) < a.words {
		m.slab = make([]uint64, max(memoSlab, a.words))
	}
	set := m.slab[:a.words:a.words]
	m.slab = m.slab[a.words:]
	a.scan(value, set)
	// The key is copied: the caller's string may share memory that Coraza
	// reuses after the transaction.
	m.sets[strings.Clone(value)] = set
	m.bytes += len(value) + 8*len(set) + 48 // 48: map entry overhead
	return set
}

// memoClause is a clause with literal ids.
type memoClause []memoLiteral

type memoLiteral struct {
	literal
	id    int
	exact bool // case-sensitive with letters: confirm a hit with strings.Contains
}

// screenClause is a clause as one bit mask per word of the presence set
// for its case-insensitive literals, plus the literals a hit must confirm.
type screenClause struct {
	masks []wordMask
	exact []memoLiteral
}

type wordMask struct {
	w int
	m uint64
}

func newScreenClause(c memoClause) screenClause {
	var sc screenClause
	for _, l := range c {
		if l.exact {
			sc.exact = append(sc.exact, l)
			continue
		}
		w, bit := l.id>>6, uint64(1)<<(l.id&63)
		i := slices.IndexFunc(sc.masks, func(m wordMask) bool { return m.w == w })
		if i < 0 {
			sc.masks = append(sc.masks, wordMask{w: w, m: bit})
		} else {
			sc.masks[i].m |= bit
		}
	}
	return sc
}

// occursIn is memoClause.occursIn over the masks.
func (c *screenClause) occursIn(value string, set []uint64) bool {
	for _, m := range c.masks {
		if set[m.w]&m.m != 0 {
			return true
		}
	}
	for _, l := range c.exact {
		if set[l.id>>6]&(1<<(l.id&63)) != 0 && strings.Contains(value, l.s) {
			return true
		}
	}
	return false
}

// memoPrefilter is prefilter over the memo.
type memoPrefilter struct {
	clauses []memoClause
	screen  []screenClause // the clauses for rule pre-selection's screen
	fold    bool
	maxID   int
}

func newMemoPrefilter(p *prefilter) *memoPrefilter {
	if p == nil {
		return nil
	}
	mp := &memoPrefilter{fold: p.fold}
	for _, c := range p.clauses {
		mc := make(memoClause, len(c))
		for i, l := range c {
			id := registerLiteral(l)
			mc[i] = memoLiteral{literal: l, id: id, exact: !l.fold && hasASCIILetter(l.s)}
			mp.maxID = max(mp.maxID, id)
		}
		mp.clauses = append(mp.clauses, mc)
		mp.screen = append(mp.screen, newScreenClause(mc))
	}
	return mp
}

// mayMatch reports false only when no value with these bytes can match.
func (p *memoPrefilter) mayMatch(value string) bool {
	if p.fold && !isASCII(value) {
		return true
	}
	a := current.Load()
	if a == nil || a.n <= p.maxID || len(value) > memoMaxValue {
		if a == nil {
			a = snapshot()
		} else if a.n <= p.maxID {
			refresh()
		}
		if a == nil || a.n <= p.maxID || len(value) > memoMaxValue {
			return p.direct(value)
		}
	}
	m := memoPool.Get().(*valueMemo)
	set := m.presence(a, value)
	ok := true
	for _, c := range p.clauses {
		if !c.occursIn(value, set) {
			ok = false
			break
		}
	}
	memoPool.Put(m)
	return ok
}

func (c memoClause) occursIn(value string, set []uint64) bool {
	for _, l := range c {
		if set[l.id>>6]&(1<<(l.id&63)) == 0 {
			continue
		}
		if !l.exact || strings.Contains(value, l.s) {
			return true
		}
	}
	return false
}

func (p *memoPrefilter) direct(value string) bool {
	for _, c := range p.clauses {
		found := false
		for _, l := range c {
			if (l.fold && containsFold(value, l.s)) || (!l.fold && strings.Contains(value, l.s)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
