// Package istiotest holds no code: its tests feed the YAML that the meshwaf
// binary renders (built by scripts/build.sh, as CI ships it) to Istio's fake
// discovery server (istio.io/istio/pilot/test/xds) and check the Envoy
// configuration Istio builds from it: the inbound RBAC of each sidecar
// against the seed graph's plan, the ext_authz filter of each install mode
// against the opt-in label and the install settings, the ext_authz filter
// of an ambient waypoint proxy against the waypoint mode's targetRefs,
// meshwaf beside a second CUSTOM provider with and without istiod's
// PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS, and, for random graphs with
// hand-written policies, Istio's RBAC (evaluated with Envoy's RBAC
// semantics), `meshwaf policy verify` and the graph's intent against each
// other, request by request.
//
// Run from the repo root: (cd test/istio && go test -count=1 ./...)
package istiotest
