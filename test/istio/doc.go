// Package istiotest holds no code: its tests feed the YAML that the meshwaf
// binary renders (built by scripts/build.sh, as CI ships it) to Istio's fake
// discovery server (istio.io/istio/pilot/test/xds) and check the Envoy
// configuration Istio builds from it: the inbound RBAC of each sidecar
// against the seed graph's plan, and the ext_authz filter of each install
// mode against the opt-in label and the install settings.
//
// Run from the repo root: (cd test/istio && go test -count=1 ./...)
package istiotest
