//go:build !rx_nomemo

package rx

// rxLiteralMode names how this build answers the literal prefilter.
const rxLiteralMode = "memo"

// newLiteralFilter answers p through the per-value literal memo
// (memo.go). Build with -tags rx_nomemo for per-rule literal searches.
func newLiteralFilter(p *prefilter) literalFilter {
	if p == nil {
		return nil
	}
	return newMemoPrefilter(p)
}
