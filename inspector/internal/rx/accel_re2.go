//go:build re2_cgo

package rx

import (
	"sync/atomic"

	"github.com/wasilibs/go-re2"
)

// rxAccelerator names the no-match accelerator of this build.
const rxAccelerator = "re2-cgo"

// accelAnswers counts the values the accelerator was asked about, so that
// tests can tell an accelerator that answers from one that never loaded.
var accelAnswers atomic.Int64

// newAccelerator compiles expr with RE2 (github.com/wasilibs/go-re2 over
// the system's libre2 through cgo, selected by the re2_cgo build tag). RE2
// runs a DFA, so a value that does not match is rejected in one pass; the
// operator then searches matches again with Go's regexp for the captures.
// RE2 and Go's regexp read the same syntax but differ on invalid UTF-8
// (Go sees U+FFFD, RE2 bytes), so the operator asks RE2 only about valid
// UTF-8 values. A pattern RE2 does not accept gets no accelerator.
func newAccelerator(expr string) noMatcher {
	re, err := re2.Compile(expr)
	if err != nil {
		return nil
	}
	return countingRE2{re}
}

type countingRE2 struct{ re *re2.Regexp }

func (c countingRE2) MatchString(s string) bool {
	accelAnswers.Add(1)
	return c.re.MatchString(s)
}

func accelAnswerCount() int64 { return accelAnswers.Load() }
