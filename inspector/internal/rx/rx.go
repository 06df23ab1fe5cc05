// Package rx is meshwaf's @rx operator for Coraza. Register installs it in
// Coraza's process-wide operator registry; nothing is registered by
// importing the package.
package rx

import (
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"rsc.io/binaryregexp"
)

// meshwaf's @rx operator. It answers exactly what Coraza's own @rx answers
// (same pattern flags, same engine choice, same TX.0-TX.8 captures) but puts
// cheap no-match tests in front of the regular expression:
//
//  1. a necessary-literal prefilter derived from the pattern's syntax tree
//     (literals.go): when none of the literals a match needs is in the
//     value, the value cannot match;
//  2. a lazy DFA over the pattern's own program (dfa.go) that answers
//     match or no match for ASCII values in one pass;
//  3. for the values the DFA leaves open, when built with -tags re2_cgo,
//     RE2's DFA (accel_re2.go) as a no-match test for valid UTF-8 values.
//
// Go's regexp runs only when the answer is still open, or when the rule
// captures and the value matches (it fills the captures). A value the tests
// reject would not have matched, and Coraza captures nothing for a value
// that does not match, so verdicts cannot change.
//
// Registration is process-global (Coraza's plugin registry) and happens on
// the first Register call (the inspector's Compile makes it): a WAF built by
// plain coraza.NewWAF before that keeps Coraza's own @rx. Coraza's SecRxPreFilter setting is ignored: this
// operator's prefilter is exact, Coraza 3.8.1's is not.

var (
	registerOnce sync.Once
	rxRegistered atomic.Bool
)

// Register installs meshwaf's @rx in Coraza's operator registry, once per
// process; later calls do nothing. Rules parsed afterwards (by any WAF in
// the process) use it.
func Register() {
	registerOnce.Do(func() {
		plugins.RegisterOperator("rx", newRxOperator)
		rxRegistered.Store(true)
	})
}

// rxOperator is one compiled @rx argument; it is shared by every rule with
// the same pattern and is safe for concurrent use.
type rxOperator struct {
	re    *regexp.Regexp
	pf    literalFilter // nil: no literal is necessary for a match
	dfa   *dfa          // nil: the DFA is off in this build
	accel noMatcher     // nil: no accelerator for this pattern or build
}

// literalFilter is a prefilter's test: false only when value cannot match.
type literalFilter interface {
	mayMatch(value string) bool
}

// noMatcher is a fast test that a valid UTF-8 value does not match.
type noMatcher interface {
	MatchString(s string) bool
}

// binaryRxOperator is @rx for patterns that match bytes that are not UTF-8;
// Coraza compiles those, without the default flags, with binaryregexp.
type binaryRxOperator struct {
	re *binaryregexp.Regexp
	pf literalFilter // over bytes; nil: no literal is necessary
}

// maxCaptures is the number of capture groups the capture action keeps
// (TX.0 to TX.8), as in Coraza.
const maxCaptures = 9

// Registered reports whether Register has installed meshwaf's @rx.
func Registered() bool { return rxRegistered.Load() }

// Accelerator names the no-match tests compiled into this build of
// meshwaf's @rx operator: the accelerator, "none" (pure Go, the default) or
// "re2-cgo", how literals are looked up, "memo" (default) or "per-rule",
// and whether the DFA runs, "on" (default) or "off".
func Accelerator() string {
	return rxAccelerator + ", literals: " + rxLiteralMode + ", dfa: " + rxDFAMode
}

// AccelAnswers is the number of values the re2_cgo accelerator answered in
// this process (0 in other builds): a differential test tells by it an
// accelerator that answers from one that never loaded.
func AccelAnswers() int64 { return accelAnswerCount() }

func newRxOperator(opts plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	expr := rxDefaultFlags + opts.Arguments
	build := func() (any, error) {
		if matchesNonUTF8(expr) {
			re, err := binaryregexp.Compile(opts.Arguments)
			if err != nil {
				return nil, err
			}
			return &binaryRxOperator{re: re, pf: newLiteralFilter(newPrefilter(opts.Arguments, true))}, nil
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, err
		}
		op := &rxOperator{re: re, pf: newLiteralFilter(newPrefilter(expr, false))}
		if rxDFAMode == "on" {
			op.dfa = newDFA(expr)
		}
		op.accel = newAccelerator(expr)
		return op, nil
	}
	var (
		v   any
		err error
	)
	if opts.Memoizer != nil {
		v, err = opts.Memoizer.Do("meshwaf-rx:"+expr, build)
	} else {
		v, err = build()
	}
	if err != nil {
		return nil, err
	}
	return v.(plugintypes.Operator), nil
}

// quick runs the no-match tests and the DFA: dfaNoMatch and dfaMatch are
// answers, dfaUnknown leaves it to the regular expression.
func (o *rxOperator) quick(value string) dfaResult {
	answer := dfaUnknown
	short := o.dfa != nil && len(value) <= dfaFirstMax
	if short {
		// A few table steps cost less than the literal memo's lookup.
		answer = o.dfa.Match(value)
	}
	if answer == dfaUnknown {
		if o.pf != nil && !o.pf.mayMatch(value) {
			return dfaNoMatch
		}
		if o.dfa != nil && !short {
			answer = o.dfa.Match(value)
		}
	}
	if answer == dfaUnknown && o.accel != nil && utf8.ValidString(value) && !o.accel.MatchString(value) {
		return dfaNoMatch
	}
	return answer
}

// Match reports whether value matches, as Evaluate does, without captures.
func (o *rxOperator) Match(value string) bool {
	switch o.quick(value) {
	case dfaNoMatch:
		return false
	case dfaMatch:
		return true
	}
	return o.re.MatchString(value)
}

// Evaluate reports whether value matches, capturing like Coraza's @rx.
func (o *rxOperator) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if !tx.Capturing() {
		return o.Match(value)
	}
	if o.quick(value) == dfaNoMatch {
		return false
	}
	m := o.re.FindStringSubmatchIndex(value)
	if m == nil {
		return false
	}
	for i := 0; i < len(m)/2 && i < maxCaptures; i++ {
		if m[2*i] < 0 {
			tx.CaptureField(i, "")
			continue
		}
		tx.CaptureField(i, value[m[2*i]:m[2*i+1]])
	}
	return true
}

// Match reports whether value matches, without captures.
func (o *binaryRxOperator) Match(value string) bool {
	return (o.pf == nil || o.pf.mayMatch(value)) && o.re.MatchString(value)
}

// Evaluate reports whether value matches, capturing like Coraza's @rx.
func (o *binaryRxOperator) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if o.pf != nil && !o.pf.mayMatch(value) {
		return false
	}
	if !tx.Capturing() {
		return o.re.MatchString(value)
	}
	m := o.re.FindStringSubmatch(value)
	if m == nil {
		return false
	}
	for i := 0; i < len(m) && i < maxCaptures; i++ {
		tx.CaptureField(i, m[i])
	}
	return true
}

// matchesNonUTF8 reports whether expr, with its \xHH and \x{HH} escapes
// read as the bytes they name, is not valid UTF-8: Coraza then compiles the
// pattern with binaryregexp. It reads escapes the way Coraza 3.8.1 does:
// any backslash directly before "x" starts one, fewer than four characters
// left end the decoding, and a braced escape keeps its first two digits.
func matchesNonUTF8(expr string) bool {
	out := make([]byte, 0, len(expr))
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if len(expr)-i <= 3 {
			out = append(out, expr[i:]...)
			break
		}
		if expr[i+1] != 'x' {
			out = append(out, c)
			continue
		}
		digits, skip := expr[i+2:], 3
		if len(expr)-i >= 6 && expr[i+2] == '{' {
			if end := indexByteFrom(expr, i, '}'); end >= 0 {
				digits, skip = expr[i+3:end], end-i
			}
		}
		if len(digits) < 2 {
			out = append(out, c)
			continue
		}
		b, err := strconv.ParseUint(digits[:2], 16, 8)
		if err != nil {
			out = append(out, c)
			continue
		}
		out = append(out, byte(b))
		i += skip
	}
	return !utf8.Valid(out)
}

func indexByteFrom(s string, from int, c byte) int {
	for j := from; j < len(s); j++ {
		if s[j] == c {
			return j
		}
	}
	return -1
}

// Matcher returns the @rx operator the WAF's rules use for pattern (the
// same compiled operator, through the WAF's memoizer) for rule
// pre-selection: its Match answers as Evaluate does, without captures, and
// with the memo build its MatchScreened takes a screen from NewScreen.
func Matcher(pattern string, memo plugintypes.Memoizer) (interface{ Match(string) bool }, error) {
	op, err := newRxOperator(plugintypes.OperatorOptions{Arguments: pattern, Memoizer: memo})
	if err != nil {
		return nil, err
	}
	m, ok := op.(interface{ Match(string) bool })
	if !ok {
		return nil, fmt.Errorf("@rx operator %T has no Match", op)
	}
	return m, nil
}
