// Package distinctkeys makes Coraza's per-transaction transformation cache
// return only the value a rule asked for.
//
// Coraza v3.8.1 caches a rule's transformed value under the address of the
// value's key string (not its text), the value's index in the list the rule
// read, the variable and the transformation chain. That list comes from a Go
// map, in a different order on every read, and differs between rules that
// select or exclude keys. When two values of a variable share one key
// string, e.g. every header of one multipart part (keyed by the part's name),
// a later rule with the same transformation chain (or a prefix of it) can be
// handed the transformed text of another value at the same index: its verdict
// then depends on map order and on the request's other values.
//
// Normalize gives every value of the request's collections a key string of
// its own, with the same text, so that address identifies one value for the
// rest of the phase; a cache hit then returns that value's own transformed
// text whatever the order. The hook rules (Directives) run it in phases 1
// and 2, once the phase's collections are filled and before any rule that
// transforms what it reads.
package distinctkeys

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/corazawaf/coraza/v3/collection"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types/variables"
)

// hookOperator is the operator of the hook rules; it never matches.
const hookOperator = "meshwafDistinctKeys"

var registerOnce sync.Once

// Register installs the hook operator in Coraza's registry (process-wide,
// idempotent). Call it before compiling a WAF with Directives.
func Register() {
	registerOnce.Do(func() {
		plugins.RegisterOperator(hookOperator, func(plugintypes.OperatorOptions) (plugintypes.Operator, error) {
			return hook{}, nil
		})
	})
}

// Directives returns the two hook rules, with the ids given; they must come
// before every rule of their phase that reads a collection with a
// transformation, and after every rule that adds values to one.
func Directives(phase1ID, phase2ID int) string {
	return fmt.Sprintf("SecRule REQUEST_LINE \"@%s\" \"id:%d,phase:1,pass,nolog,t:none\"\n"+
		"SecRule REQUEST_LINE \"@%[1]s\" \"id:%[3]d,phase:2,pass,nolog,t:none\"\n",
		hookOperator, phase1ID, phase2ID)
}

type hook struct{}

// Evaluate normalizes tx's collections; it never matches.
func (hook) Evaluate(tx plugintypes.TransactionState, _ string) bool {
	Normalize(tx.Variables())
	return false
}

// changing are the map collections Coraza itself rewrites while a phase
// runs (after Normalize): TX (never cached), RULE and MATCHED_VARS.
var changing = map[variables.RuleVariable]bool{
	variables.TX:          true,
	variables.Rule:        true,
	variables.MatchedVars: true,
}

// Normalize re-adds, in their order, the values of every map collection of
// v (but those in changing) that holds a key string shared with another
// value of any such collection (collections concatenated into ARGS share a
// cache variable), each under a fresh copy of its key. Texts, values and
// the order of a key's values stay the same. It returns the number of
// collections rewritten.
func Normalize(v plugintypes.TransactionVariables) int {
	var seenBuf [64]*byte
	seen := addrSet{small: seenBuf[:0]}
	var visitedBuf [16]collection.Map
	visited := visitedBuf[:0] // XML is REQUEST_XML
	rewritten := 0
	v.All(func(rv variables.RuleVariable, col collection.Collection) bool {
		m, ok := col.(collection.Map)
		if !ok || changing[rv] {
			return true
		}
		all := m.FindAll()
		if len(all) == 0 || slices.Contains(visited, m) {
			return true
		}
		visited = append(visited, m)
		shared := false
		for _, md := range all {
			if !seen.add(keyAddr(md.Key())) {
				shared = true
			}
		}
		if !shared {
			return true
		}
		for _, md := range all {
			m.Remove(md.Key()) // all values of that key; a no-op once removed
		}
		for _, md := range all {
			k := fresh(md.Key())
			seen.add(keyAddr(k))
			m.Add(k, md.Value())
		}
		rewritten++
		return true
	})
	return rewritten
}

// addrSet is a set of addresses, in a slice while small (most requests).
type addrSet struct {
	small []*byte
	big   map[*byte]bool
}

// add adds p and reports whether it is a new, non-nil address.
func (s *addrSet) add(p *byte) bool {
	if p == nil {
		return false
	}
	if s.big != nil {
		if s.big[p] {
			return false
		}
		s.big[p] = true
		return true
	}
	if slices.Contains(s.small, p) {
		return false
	}
	if len(s.small) < cap(s.small) {
		s.small = append(s.small, p)
		return true
	}
	s.big = make(map[*byte]bool, 2*len(s.small))
	for _, q := range s.small {
		s.big[q] = true
	}
	s.big[p] = true
	return true
}

// keyAddr is what Coraza's cache keys a value by: its key's address.
func keyAddr(k string) *byte { return unsafe.StringData(k) } //nolint:gosec // only compared, never written through

// fresh returns a copy of k in memory of its own; for "", a zero-length
// string at the start of a new allocation (a nil or shared address would
// not tell empty keys apart).
func fresh(k string) string {
	if k == "" {
		return strings.Clone(" ")[:0]
	}
	return strings.Clone(k)
}
