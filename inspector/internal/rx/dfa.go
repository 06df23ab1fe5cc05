package rx

import (
	"encoding/binary"
	"regexp/syntax"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// A lazy DFA answering one question about a Go regular expression: does an
// all-ASCII value contain a match? It is built from the same syntax tree and
// program regexp.Compile builds (syntax.Perl, simplified), so it accepts
// exactly the values Go's regexp matches; Go's regexp runs an NFA on every
// value that has no literal to skip on, the DFA one table step per byte.
//
// A state is the set of program instructions waiting for the next byte and
// the kind of the byte before it (start, newline, word or other), which is
// what ^, $, \b and \B look at. A step adds the program's start (an
// unanchored search starts a match at every position), follows the empty
// transitions the context allows, reports a match if it reaches one, and
// moves the instructions that accept the byte. Bytes that no instruction
// tells apart share a class and a column in the transition table.
//
// States are made on first use and shared by all goroutines: reads are
// lock-free atomic loads, making a state takes the DFA's mutex. The states
// are bounded (dfaBudget per DFA, dfaTotalBudget in all); when they are
// spent the cache is dropped and started again, and the value being
// scanned is left to Go's regexp. So are non-ASCII values, and values that
// would add more than dfaMaxBuild transitions.

// dfaResult is the DFA's answer for one value.
type dfaResult int8

const (
	dfaUnknown dfaResult = iota // not answered: ask the regular expression
	dfaNoMatch
	dfaMatch
)

// dfaBudget bounds the memory of one DFA's states, dfaTotalBudget that of
// all DFAs in the process: a DFA over either drops its states.
const (
	dfaBudget      = 1 << 20
	dfaTotalBudget = 32 << 20
)

// Bytes of states held and caches dropped, by all DFAs in the process.
var (
	dfaBytes  atomic.Int64
	dfaResets atomic.Int64
)

// DFAStats reports the memory the @rx DFAs hold and how many times one
// dropped its states for lack of budget, in this process.
func DFAStats() (bytes, resets int64) { return dfaBytes.Load(), dfaResets.Load() }

// dfaMaxBuild is the most transitions one value may add to a DFA.
const dfaMaxBuild = 64

// dfaFirstMax is the longest value @rx asks the DFA before the literal
// prefilter: a few table steps cost less than hashing the value for the
// literal memo (10% off a 128 KiB JSON body, most of whose values are
// short; longer values keep the memo's one scan for all rules).
const dfaFirstMax = 64

// Kinds of the byte before a position.
const (
	kindStart = iota
	kindNewline
	kindWord
	kindOther
	nkinds
)

type dfa struct {
	prog    *syntax.Prog
	classes [utf8.RuneSelf]uint8 // ASCII byte -> class
	rep     []rune               // a byte of each class
	nclass  int
	match   *dstate       // the state after a match: final
	budget  int           // bytes of states per cache generation
	held    *atomic.Int64 // bytes of the current generation in dfaBytes

	mu    sync.Mutex
	cache atomic.Pointer[dcache]
	// Scratch space of the state builder, guarded by mu.
	seen  []uint32
	gen   uint32
	stack []uint32
	buf   []uint32
	outs  []uint32
	key   []byte
}

// dcache is one generation of states.
type dcache struct {
	states map[string]*dstate
	bytes  int
	start  *dstate
	live   bool // current: its bytes are counted in d.held and dfaBytes
}

// dstate is immutable but for its lazily filled transitions.
type dstate struct {
	kind  uint8
	pcs   []uint32 // instructions waiting for the next byte
	next  []atomic.Pointer[dstate]
	final atomic.Int32 // 0 unknown, 1 no match at the end, 2 match
	owner *dcache
}

// newDFA returns the DFA of expr, or nil when expr does not parse the way
// regexp.Compile parses it.
func newDFA(expr string) *dfa {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil
	}
	d := &dfa{prog: prog, budget: dfaBudget}
	// Classes: bytes with the same kind that every rune instruction
	// accepts or refuses alike.
	sig := make(map[string]uint8)
	var b []byte
	for c := range rune(utf8.RuneSelf) {
		b = append(b[:0], byte(byteKind(c)))
		var bits byte
		n := 0
		for i := range prog.Inst {
			in := &prog.Inst[i]
			if !isRuneInst(in.Op) {
				continue
			}
			if runeMatches(in, c) {
				bits |= 1 << (n & 7)
			}
			if n++; n&7 == 0 {
				b = append(b, bits)
				bits = 0
			}
		}
		b = append(b, bits)
		id, ok := sig[string(b)]
		if !ok {
			id = uint8(len(d.rep))
			sig[string(b)] = id
			d.rep = append(d.rep, c)
		}
		d.classes[c] = id
	}
	d.nclass = len(d.rep)
	d.match = &dstate{}
	d.match.final.Store(2)
	// The states a collected DFA held are no longer held (Coraza drops
	// operators when the last WAF using them is closed).
	d.held = new(atomic.Int64)
	runtime.AddCleanup(d, func(h *atomic.Int64) { dfaBytes.Add(-h.Load()) }, d.held)
	d.cache.Store(d.newCache())
	return d
}

func isRuneInst(op syntax.InstOp) bool {
	switch op {
	case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
		return true
	}
	return false
}

// runeMatches reports whether instruction in accepts r, as Go's regexp
// decides it.
func runeMatches(in *syntax.Inst, r rune) bool {
	switch in.Op {
	case syntax.InstRuneAny:
		return true
	case syntax.InstRuneAnyNotNL:
		return r != '\n'
	default:
		return in.MatchRune(r)
	}
}

func byteKind(c rune) int {
	switch {
	case c == '\n':
		return kindNewline
	case syntax.IsWordChar(c):
		return kindWord
	default:
		return kindOther
	}
}

// kindRune is a rune of each kind, for syntax.EmptyOpContext.
var kindRune = [nkinds]rune{kindStart: -1, kindNewline: '\n', kindWord: 'a', kindOther: ' '}

// newCache makes the next generation of states, counted in dfaBytes as
// long as it is current. Called with mu held, or before d is shared.
func (d *dfa) newCache() *dcache {
	c := &dcache{states: make(map[string]*dstate), live: true}
	c.start = d.intern(c, kindStart, nil)
	return c
}

// intern returns c's state for (kind, pcs); pcs is sorted and may be
// scratch space. Called with mu held, or before d is shared.
func (d *dfa) intern(c *dcache, kind uint8, pcs []uint32) *dstate {
	d.key = append(d.key[:0], kind)
	for _, pc := range pcs {
		d.key = binary.LittleEndian.AppendUint32(d.key, pc)
	}
	if s, ok := c.states[string(d.key)]; ok {
		return s
	}
	s := &dstate{kind: kind, pcs: slices.Clone(pcs), next: make([]atomic.Pointer[dstate], d.nclass), owner: c}
	c.states[string(d.key)] = s
	size := 2*len(d.key) + 16*d.nclass + 128
	c.bytes += size
	if c.live {
		d.held.Add(int64(size))
		dfaBytes.Add(int64(size))
	}
	return s
}

// Match answers for value: dfaMatch or dfaNoMatch when value is ASCII and
// the states it needs fit in the budget, dfaUnknown otherwise. It is safe
// for concurrent use.
func (d *dfa) Match(value string) dfaResult {
	s := d.cache.Load().start
	built := 0
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c >= utf8.RuneSelf {
			return dfaUnknown
		}
		k := d.classes[c]
		n := s.next[k].Load()
		if n == nil {
			// A value that needs many new transitions is left to the
			// regexp: building one costs a pass over the program, and
			// crafted input could otherwise make the DFA slower than
			// the NFA it replaces. Later values build on what this
			// one added.
			if built++; built > dfaMaxBuild {
				return dfaUnknown
			}
			if n = d.step(s, k); n == nil {
				return dfaUnknown
			}
		}
		if n == d.match {
			return dfaMatch
		}
		s = n
	}
	f := s.final.Load()
	if f == 0 {
		f = d.end(s)
	}
	if f == 2 {
		return dfaMatch
	}
	return dfaNoMatch
}

// closure follows the empty transitions from s's instructions and the
// program's start under the context between s's last byte and next (-1
// at the end). It leaves the rune instructions reached in d.buf and
// reports whether a match was reached. Called with mu held.
func (d *dfa) closure(s *dstate, next rune) bool {
	flags := syntax.EmptyOpContext(kindRune[s.kind], next)
	if d.seen == nil {
		d.seen = make([]uint32, len(d.prog.Inst))
	}
	d.gen++
	if d.gen == 0 {
		clear(d.seen)
		d.gen = 1
	}
	d.buf = d.buf[:0]
	d.stack = append(d.stack[:0], uint32(d.prog.Start))
	for i := len(s.pcs) - 1; i >= 0; i-- {
		d.stack = append(d.stack, s.pcs[i])
	}
	for len(d.stack) > 0 {
		pc := d.stack[len(d.stack)-1]
		d.stack = d.stack[:len(d.stack)-1]
		if d.seen[pc] == d.gen {
			continue
		}
		d.seen[pc] = d.gen
		in := &d.prog.Inst[pc]
		switch in.Op {
		case syntax.InstMatch:
			return true
		case syntax.InstAlt, syntax.InstAltMatch:
			d.stack = append(d.stack, in.Arg, in.Out)
		case syntax.InstCapture, syntax.InstNop:
			d.stack = append(d.stack, in.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(in.Arg)&^flags == 0 {
				d.stack = append(d.stack, in.Out)
			}
		case syntax.InstFail:
		default:
			d.buf = append(d.buf, pc)
		}
	}
	return false
}

// step makes s's transition on class k; nil when the budget is spent.
func (d *dfa) step(s *dstate, k uint8) *dstate {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := s.next[k].Load(); n != nil {
		return n
	}
	c := s.owner
	if c.bytes > d.budget || dfaBytes.Load() > dfaTotalBudget {
		if d.cache.Load() == c {
			c.live = false
			dfaBytes.Add(-d.held.Swap(0))
			dfaResets.Add(1)
			d.cache.Store(d.newCache())
		}
		return nil
	}
	r := d.rep[k]
	var n *dstate
	if d.closure(s, r) {
		n = d.match
	} else {
		d.outs = d.outs[:0]
		for _, pc := range d.buf {
			if in := &d.prog.Inst[pc]; runeMatches(in, r) {
				d.outs = append(d.outs, in.Out)
			}
		}
		slices.Sort(d.outs)
		d.outs = slices.Compact(d.outs)
		n = d.intern(c, uint8(byteKind(r)), d.outs)
	}
	s.next[k].Store(n)
	return n
}

// end computes whether a match ends at the end of the value after s.
func (d *dfa) end(s *dstate) int32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := int32(1)
	if d.closure(s, -1) {
		f = 2
	}
	s.final.Store(f)
	return f
}
