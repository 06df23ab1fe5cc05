// Package install renders install options as the Istio and Kubernetes
// objects of each install mode (mesh, envoyfilter, pod) and as the
// kustomize tree under manifests/, as deterministic YAML. It validates the
// options it is given (Render, KustomizeTree); callers only parse them. It
// knows nothing about segmentation policies or Coraza.
package install

// The label that opts a workload in to inspection.
const (
	// OptInLabel on a pod template opts the workload in to inspection.
	OptInLabel = "meshwaf.io/inspect"
	// OptInValue is the value of OptInLabel that opts in.
	OptInValue = "enabled"
)
