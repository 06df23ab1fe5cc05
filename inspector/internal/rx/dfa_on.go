//go:build !rx_nodfa

package rx

// rxDFAMode says whether @rx runs the lazy DFA (dfa.go) before Go's
// regexp. Build with -tags rx_nodfa to measure without it.
const rxDFAMode = "on"
