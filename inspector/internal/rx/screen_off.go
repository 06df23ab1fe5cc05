//go:build rx_nomemo

package rx

// NewScreen: without the literal memo there is no shared literal scan;
// rule pre-selection asks each operator's Match.
func NewScreen() interface{ Reset(string) } { return nil }
