// Package cluster holds no code: its tests start etcd and kube-apiserver on
// 127.0.0.1 (binaries from .ci/tools.sh), install Istio's CRDs, and check that
// the API server and istioctl accept every object meshwaf renders.
package cluster
