package cluster

import (
	"fmt"
	"strings"

	"istio.io/api/annotation"

	"github.com/meshwaf/meshwaf/internal/kubeyaml"
)

// checkWaypointFilters finds EnvoyFilters that apply to waypoint proxies,
// where Istio does not support them: a selector naming the waypoint label
// or matching a waypoint's pods, or a targetRef to a waypoint's Gateway.
func checkWaypointFilters(s *Snapshot, m meshState) []Finding {
	root := m.rootNamespace()
	var out []Finding
	for _, f := range s.EnvoyFilters {
		obj := Object{Kind: "EnvoyFilter", Namespace: f.Namespace, Name: f.Name}
		sel := f.Spec.GetWorkloadSelector().GetLabels()
		var why string
		if sel[WaypointManagedLabel] == WaypointManagedValue {
			why = fmt.Sprintf("its workloadSelector names %s=%s", WaypointManagedLabel, WaypointManagedValue)
		}
		for _, w := range s.Workloads {
			if why != "" {
				break
			}
			if !w.isWaypoint() {
				continue
			}
			for _, ref := range f.Spec.GetTargetRefs() {
				if ref.GetKind() == "Gateway" && f.Namespace == w.Namespace && ref.GetName() == w.Labels[GatewayNameLabel] {
					why = fmt.Sprintf("its targetRef names Gateway %s, the waypoint of %s", ref.GetName(), w.object())
				}
			}
			if why == "" && len(sel) > 0 && len(f.Spec.GetTargetRefs()) == 0 && selects(f.Namespace, root, sel, w) {
				why = fmt.Sprintf("its workloadSelector matches the waypoint %s", w.object())
			}
		}
		if why != "" {
			out = append(out, newFinding(CodeEnvoyFilterOnWaypoint, obj,
				"for ext_authz on a waypoint use a CUSTOM AuthorizationPolicy with targetRefs (meshwaf's waypoint mode); remove the EnvoyFilter",
				"applies to a waypoint proxy, where Istio does not support EnvoyFilter: %s", why))
		}
	}
	return out
}

// checkDryRun lists the AuthorizationPolicies meshwaf generated that are
// still in dry-run: they log (shadow) decisions and enforce nothing.
func checkDryRun(s *Snapshot) []Finding {
	var out []Finding
	for _, p := range s.AuthorizationPolicies {
		if p.Labels[kubeyaml.ManagedByLabel] != kubeyaml.ManagedBy ||
			!strings.EqualFold(p.Annotations[annotation.IoIstioDryRun.Name], "true") {
			continue
		}
		out = append(out, newFinding(CodePolicyAwaitingPromotion,
			Object{Kind: "AuthorizationPolicy", Namespace: p.Namespace, Name: p.Name},
			fmt.Sprintf("meshwaf policy promote -f GRAPH removes the %s annotation once the shadow denials have stayed at zero for --stable-for", annotation.IoIstioDryRun.Name),
			"in dry-run (%s: \"true\"): waiting for promotion, enforces nothing", annotation.IoIstioDryRun.Name))
	}
	return out
}
