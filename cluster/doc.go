// Package cluster reads a live cluster for meshwaf: `meshwaf doctor`'s
// read-only snapshot of Istio's mesh config, meshwaf's own objects, the
// workloads, AuthorizationPolicies and EnvoyFilters (Read), and the checks
// over that snapshot (Diagnose), which are pure functions of it. Each
// finding has a stable code (Codes lists them), a severity, the object it
// concerns, a message and a fix, as istioctl analyze's messages do.
//
// It never writes to the cluster and knows nothing about Coraza: meshwaf's
// own config file is read through the function Target.ParseConfig.
package cluster
