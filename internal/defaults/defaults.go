// Package defaults holds the values that the meshwaf binary, the install
// manifests it renders and the segmentation graph must agree on. Each is
// defined here once; the packages that expose one name it as an alias of
// this (extauthz.ContextKeyProfile, istio.DefaultGRPCPort, ...), and
// cmd/meshwaf's TestSharedDefaults reads the checked-in manifests against
// them.
package defaults

import "time"

// ProfileContextKey is the context_extensions key that names a profile per
// route: install writes it into EnvoyFilters, extauthz reads it.
const ProfileContextKey = "meshwaf-profile"

// Ports and listen addresses of serve: ext_authz and gRPC health on
// GRPCPort, /metrics, /healthz and /readyz on AdminPort, all interfaces.
const (
	GRPCPort     = 9000
	AdminPort    = 9090
	GRPCAddress  = ":9000" // ":" + GRPCPort
	AdminAddress = ":9090" // ":" + AdminPort
)

// RequestBodyLimit is the default profile's request body limit (bytes). The
// body Envoy sends with a check (maxRequestBytes) must not exceed it.
const RequestBodyLimit = 1 << 20

// Drain timings. ShutdownTimeout bounds the drain of checks in flight
// (serve's default, and the installed config's); DrainDelay is how long the
// installed server reports NOT_SERVING before it stops accepting checks
// (serve's own default is none).
const (
	DrainDelay      = 5 * time.Second
	ShutdownTimeout = 15 * time.Second
)
