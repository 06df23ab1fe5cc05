package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	k8snetworkingv1 "k8s.io/api/networking/v1"

	"github.com/meshwaf/meshwaf/istio"
	"github.com/meshwaf/meshwaf/meshpolicy"
)

// verifyEgress checks the Sidecars and the egress NetworkPolicies among
// objs against plan and writes what it found; without either it writes
// nothing, unless required. ok is false on a mismatch.
func verifyEgress(w io.Writer, plan *meshpolicy.Plan, objs *istio.EgressObjects, required bool, opts istio.EgressCheckOptions) (ok bool, err error) {
	var egressNPs []istio.Origin[*k8snetworkingv1.NetworkPolicy]
	for _, np := range objs.NetworkPolicies {
		if len(np.Object.Spec.Egress) > 0 || hasType(np.Object.Spec.PolicyTypes, k8snetworkingv1.PolicyTypeEgress) {
			egressNPs = append(egressNPs, np)
		}
	}
	if len(objs.Sidecars) == 0 && len(egressNPs) == 0 {
		if required {
			return false, usageError{errors.New("--egress: no Sidecar and no NetworkPolicy with egress among the files")}
		}
		return true, nil
	}
	var b strings.Builder
	ok = true
	report := func(what string, n int, r istio.EgressReport) {
		fmt.Fprintf(&b, "egress (%s): %d read\n", what, n)
		for _, l := range []struct {
			head  string
			items []string
		}{{"problem", r.Problems}, {"missing", r.Missing}, {"extra", r.Extra}} {
			for _, it := range l.items {
				fmt.Fprintf(&b, "  %s: %s\n", l.head, it)
			}
		}
		if r.OK() {
			fmt.Fprintf(&b, "  OK: every service's %s allow exactly its graph calls\n", what)
		}
		ok = ok && r.OK()
	}
	if len(objs.Sidecars) > 0 {
		report("Sidecars", len(objs.Sidecars), istio.CheckSidecars(plan, objs.Sidecars, opts))
	}
	if len(egressNPs) > 0 {
		report("NetworkPolicies", len(egressNPs), istio.CheckNetworkPolicyEgress(plan, objs.NetworkPolicies))
	}
	_, err = io.WriteString(w, b.String())
	return ok, err
}

func hasType(types []k8snetworkingv1.PolicyType, t k8snetworkingv1.PolicyType) bool {
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}
