//go:build !re2_cgo

package rx

// rxAccelerator names the no-match accelerator of this build.
const rxAccelerator = "none"

// newAccelerator returns nil: the default build is pure Go, with only the
// literal prefilter in front of Go's regexp.
func newAccelerator(string) noMatcher { return nil }

// accelAnswerCount is 0: there is no accelerator to answer.
func accelAnswerCount() int64 { return 0 }
