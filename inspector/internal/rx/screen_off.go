//go:build rx_nomemo

package rx

// NewScreen: without the literal memo there is no shared literal scan;
// rule pre-selection asks each operator's Match.
func NewScreen() interface{ Reset(string) } { return nil }

// NewUnion: without the memo there is no screen to answer from.
func NewUnion([]interface{ Match(string) bool }) interface {
	MayAny(s interface{ Reset(string) }) (may, known bool)
} {
	return nil
}
