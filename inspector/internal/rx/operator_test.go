package rx

import (
	"regexp"
	"testing"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
)

// The operator's tests that hold in every build (rx_nomemo, rx_nodfa,
// re2_cgo).

// TestRxCaptureAndFold covers the operator's edge cases directly: the
// Kelvin sign under (?i), invalid UTF-8, and a prefilter-rejected value.
func TestRxCaptureAndFold(t *testing.T) {
	op, err := newRxOperator(rxOpts(`(?i)(ok)`))
	if err != nil {
		t.Fatal(err)
	}
	tx := &fakeTx{}
	if !op.Evaluate(tx, "o\u212a") { // Kelvin sign folds to k
		t.Fatal("(?i)ok must match o + Kelvin sign")
	}
	if tx.caps[0] != "o\u212a" || tx.caps[1] != "o\u212a" {
		t.Fatalf("captures %q", tx.caps)
	}
	if op.Evaluate(&fakeTx{}, "nothing here") {
		t.Fatal("matched without the literal")
	}
	bin, err := newRxOperator(rxOpts(`\xbc[^>\xbe]*[>\xbe]`))
	if err != nil {
		t.Fatal(err)
	}
	if !bin.Evaluate(&fakeTx{}, "a\xbcb\xbe") || bin.Evaluate(&fakeTx{}, "a<b>") {
		t.Fatal("binary pattern")
	}
}

// fakeTx is the part of a transaction the operator uses: capturing on.
type fakeTx struct {
	plugintypes.TransactionState
	caps [maxCaptures]string
}

func (*fakeTx) Capturing() bool                    { return true }
func (f *fakeTx) CaptureField(i int, value string) { f.caps[i] = value }

func rxOpts(pattern string) plugintypes.OperatorOptions {
	return plugintypes.OperatorOptions{Arguments: pattern}
}

// TestPrefilterFold: under (?i) an ASCII literal also matches non-ASCII
// runes (the Kelvin sign folds to k, the long s to s), so a case-folded
// prefilter must not reject a value that is not all ASCII. Both the
// per-rule prefilter (rx_nomemo) and this build's literal filter are asked.
func TestPrefilterFold(t *testing.T) {
	tests := []struct {
		expr, value string
	}{
		{`(?i)ok`, "o\u212a"},
		{`(?i)kiss`, "\u212ais\u017f"},
		{`(?i)select`, "\u017felect"},
		{`(?i)union\s+select`, "UNION \u017fELECT"},
		{`(?i)(?:cat|ls)\s+/etc`, "\u00e9 LS /ETC"}, // ASCII literals in a non-ASCII value
	}
	for _, tc := range tests {
		expr := rxDefaultFlags + tc.expr
		if !regexp.MustCompile(expr).MatchString(tc.value) {
			t.Fatalf("%q does not match %q: the row tests nothing", tc.expr, tc.value)
		}
		p := newPrefilter(expr, false)
		if p == nil || !p.fold {
			t.Fatalf("%q: want a case-folded prefilter, got %+v", tc.expr, p)
		}
		if !p.mayMatch(tc.value) {
			t.Errorf("%q: the prefilter rejects %q, which matches", tc.expr, tc.value)
		}
		if !newLiteralFilter(p).mayMatch(tc.value) {
			t.Errorf("%q: the %s literal filter rejects %q, which matches", tc.expr, rxLiteralMode, tc.value)
		}
		if p.mayMatch("nothing here") {
			t.Errorf("%q: the prefilter lets an ASCII value without the literal through", tc.expr)
		}
	}
}
