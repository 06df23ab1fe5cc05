//go:build rx_nodfa

package inspector

// rxDFAMode says whether @rx runs the lazy DFA (rx_dfa.go) before Go's
// regexp: not in this build.
const rxDFAMode = "off"
