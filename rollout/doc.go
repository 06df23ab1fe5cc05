// Package rollout puts a ServiceGraph's AuthorizationPolicies into a live
// cluster and watches them there: Apply (server-side apply with field
// manager "meshwaf", ownership by label, pruning, staged dry-run), Diff
// (the live policies against the graph, with the Istio-semantics evaluator
// of package istio) and Promote (dry-run to enforced once the sidecars'
// shadow denials, read from Prometheus, have stayed at zero).
//
// Ownership: an object belongs to a graph when it carries both
// app.kubernetes.io/managed-by: meshwaf and meshwaf.io/graph: <graph name>.
// Only such objects are forced over other field managers, pruned or
// promoted.
//
// Order, so that no step locks out traffic the graph allows: ALLOW
// policies are applied (and promoted) before the namespaces' allow-nothing
// default-deny, and pruning runs only after every generated object is in
// place. Within a namespace this means a workload's ALLOW list is in force
// before the default deny that would otherwise drop its callers, and a
// renamed policy's successor exists before the old one is deleted.
package rollout
