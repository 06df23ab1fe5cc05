//go:build rx_nomemo

package rx

// rxLiteralMode names how this build answers the literal prefilter.
const rxLiteralMode = "per-rule"

// newLiteralFilter answers p with per-rule literal searches.
func newLiteralFilter(p *prefilter) literalFilter {
	if p == nil {
		return nil
	}
	return p
}
