// Package helm holds no code: its tests render the chart in
// manifests/helm/meshwaf with Helm's own Go SDK (helm.sh/helm/v3, the
// version pinned in go.mod), the way `helm install --dry-run` and
// `helm template` do, and compare the objects with install.Render; they
// check values.schema.json and run Helm's linter. A module of its own, so
// the main module never inherits Helm's dependencies.
//
// Run from the repo root:
//
//	(cd test/helm && go test -count=1 ./...)
package helm
