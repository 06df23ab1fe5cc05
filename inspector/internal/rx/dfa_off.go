//go:build rx_nodfa

package rx

// rxDFAMode says whether @rx runs the lazy DFA (dfa.go) before Go's
// regexp: not in this build.
const rxDFAMode = "off"
