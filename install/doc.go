// Package install renders install options as the Istio and Kubernetes
// objects of each install mode (mesh, envoyfilter, pod, waypoint) and as the
// kustomize tree under manifests/, as deterministic YAML. It validates the
// options it is given (Render, KustomizeTree); callers only parse them. It
// knows nothing about segmentation policies or Coraza.
package install

// The label that opts a workload in to inspection.
const (
	// OptInLabel on a pod template opts the workload in to inspection.
	// In waypoint mode it marks opted-in Namespaces and Services, which
	// Options.WaypointNamespaces and WaypointServices must name: a
	// targetRef names objects, it cannot select them by label.
	OptInLabel = "meshwaf.io/inspect"
	// OptInValue is the value of OptInLabel that opts in.
	OptInValue = "enabled"
)
