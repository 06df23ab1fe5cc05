// Package cluster holds no code: its tests start etcd and kube-apiserver on
// 127.0.0.1 (binaries from .ci/tools.sh), install Istio's CRDs from the
// istio.io/api module, and check that the API server (server-side create,
// strict field validation, mostly dry runs) and istioctl (validate, manifest
// generate, analyze over the demo) accept every object meshwaf renders and
// every file under manifests/; and run `meshwaf doctor` against the demo,
// healthy and broken in each way it reports; and run `meshwaf graph
// discover` against the demo and a real Prometheus (package promtest) whose
// TSDB holds Istio-shaped series.
//
// Run from the repo root:
//
//	eval "$(.ci/tools.sh)" && (cd test/cluster && go test -count=1 ./...)
//
// Without the tool variables (or when one names a missing file) the run
// fails, naming the command above.
package cluster
