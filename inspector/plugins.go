package inspector

import (
	"github.com/meshwaf/meshwaf/inspector/internal/distinctkeys"
	"github.com/meshwaf/meshwaf/inspector/internal/grpcbody"
	"github.com/meshwaf/meshwaf/inspector/internal/preselect"
	"github.com/meshwaf/meshwaf/inspector/internal/rx"
	"github.com/meshwaf/meshwaf/inspector/internal/views"
)

// registerPlugins installs meshwaf's Coraza plugins in Coraza's
// process-wide registries: the @rx operator (internal/rx) and the GRPC body
// processor (internal/grpcbody), and the operators of the hook rules of
// rule pre-selection (internal/preselect), of distinct key strings
// (internal/distinctkeys) and of the rule adding body arguments
// (internal/views). Idempotent; Compile calls it before any rule is
// parsed.
func registerPlugins() {
	rx.Register()
	grpcbody.Register()
	preselect.Register()
	views.Register()
	distinctkeys.Register()
}

// RxAccelerator names the no-match tests compiled into this build of
// meshwaf's @rx operator: the accelerator, "none" (pure Go, the default) or
// "re2-cgo", how literals are looked up, "memo" (default) or "per-rule",
// and whether the DFA runs.
func RxAccelerator() string { return rx.Accelerator() }

// RxDFAStats reports the memory the @rx DFAs hold and how many times one
// dropped its states for lack of budget, in this process.
func RxDFAStats() (bytes, resets int64) { return rx.DFAStats() }
