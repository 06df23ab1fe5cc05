// Package discover builds a ServiceGraph from what a live mesh observed:
// edges from Istio's standard metrics in Prometheus (istio_requests_total
// and istio_tcp_connections_opened_total as the destination's sidecar
// reports them), services, ports, protocols, selectors and service accounts
// from the Kubernetes API. Observations (requests, connections, first and
// last seen) become YAML comments of the written graph.
//
// Reading (ReadFlows, ReadInventory) is separate from building (Build),
// which is a pure function of the flows and the inventory; Merge keeps a
// hand-edited graph's edits; Write renders the result deterministically.
package discover
