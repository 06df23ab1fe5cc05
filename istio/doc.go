// Package istio renders meshwaf's segmentation plans into Istio
// AuthorizationPolicies or Kubernetes NetworkPolicies as deterministic
// YAML, and evaluates AuthorizationPolicies back into allowed flows with
// Istio's semantics. It knows nothing about install options or Coraza.
package istio

// DryRunAnnotation makes Istio evaluate an ALLOW/DENY policy without
// enforcing it.
const DryRunAnnotation = "istio.io/dry-run"
