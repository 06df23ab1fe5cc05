// Package istiotest holds no code: its tests feed the YAML that the meshwaf
// binary renders to Istio's fake discovery server and check the Envoy
// configuration Istio builds from it.
package istiotest
