// Package kustomize holds no code: its tests build every overlay of
// manifests/, the pod mode's sidecar component applied to an application,
// and the demo with kustomize's own Go API (sigs.k8s.io/kustomize/api, the
// version kustomize v5.8.2 is built from), in memory: no kustomize binary,
// nothing installed. A module of its own, so the main module never inherits
// kustomize's dependencies.
//
// Run from the repo root:
//
//	(cd test/kustomize && go test -count=1 ./...)
package kustomize
