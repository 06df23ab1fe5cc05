// Package istio renders meshwaf's plans and install options into Istio and
// Kubernetes objects (istio.io/client-go and k8s.io/api types) as
// deterministic YAML, and evaluates AuthorizationPolicies back into allowed
// flows with Istio's semantics. It knows nothing about Coraza.
package istio

// Labels and annotations meshwaf puts on or looks for in objects.
const (
	// OptInLabel on a pod template opts the workload in to inspection.
	OptInLabel = "meshwaf.io/inspect"
	// OptInValue is the value of OptInLabel that opts in.
	OptInValue = "enabled"
	// ManagedByLabel marks every object meshwaf generates.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of ManagedByLabel.
	ManagedBy = "meshwaf"
	// DryRunAnnotation makes Istio evaluate an ALLOW/DENY policy without enforcing it.
	DryRunAnnotation = "istio.io/dry-run"
)
