package cluster

import (
	"fmt"
	"slices"
	"strings"

	"istio.io/api/label"
)

// waypointTarget is one object a CUSTOM policy attaches to with targetRefs.
type waypointTarget struct {
	kind, namespace, name string
}

func (w waypointTarget) object() Object {
	return Object{Kind: w.kind, Namespace: w.namespace, Name: w.name}
}

// checkWaypointTargets covers the waypoint mode: each Gateway or Service
// that a meshwaf CUSTOM policy targets is under inspection when a
// waypoint serves it (a waypoint proxy for the Gateway; istio.io/use-waypoint
// on the Service or its namespace), and must not be targeted by another
// CUSTOM provider too. It returns the findings and how many targets are
// under inspection.
func checkWaypointTargets(s *Snapshot, t Target, m meshState) ([]Finding, int) {
	type holders struct {
		meshwaf, others []string
	}
	targets := map[waypointTarget]*holders{}
	var order []waypointTarget
	for _, p := range s.AuthorizationPolicies {
		prov := customProvider(p)
		if prov == "" {
			continue
		}
		refs := p.Spec.GetTargetRefs()
		if r := p.Spec.GetTargetRef(); r != nil {
			refs = append(refs, r)
		}
		for _, r := range refs {
			ns := r.GetNamespace()
			if ns == "" {
				ns = p.Namespace
			}
			wt := waypointTarget{kind: r.GetKind(), namespace: ns, name: r.GetName()}
			h := targets[wt]
			if h == nil {
				h = &holders{}
				targets[wt] = h
				order = append(order, wt)
			}
			ref := fmt.Sprintf("AuthorizationPolicy %s/%s", p.Namespace, p.Name)
			if prov == t.ProviderName {
				h.meshwaf = append(h.meshwaf, ref)
			} else {
				h.others = append(h.others, fmt.Sprintf("%q (%s)", prov, ref))
			}
		}
	}
	var out []Finding
	covered := 0
	multiple := multipleCustomAllowed(s)
	for _, wt := range order {
		h := targets[wt]
		if len(h.meshwaf) == 0 {
			continue
		}
		slices.Sort(h.meshwaf)
		slices.Sort(h.others)
		obj := wt.object()
		if why := waypointMissing(s, wt); why != "" {
			out = append(out, newFinding(CodeWaypointTargetIdle, obj, waypointFix(wt),
				"targeted by meshwaf's waypoint policy %s, which has no effect: %s", strings.Join(h.meshwaf, ", "), why))
			continue
		}
		if m.mc != nil && !m.has(t.ProviderName) {
			continue // MW0002 reports the provider
		}
		covered++
		out = append(out, newFinding(CodeWorkloadInspected, obj, "",
			"inspected by meshwaf: waypoint (%s)", strings.Join(h.meshwaf, ", ")))
		if len(h.others) > 0 {
			if multiple {
				out = append(out, newFinding(CodeWorkloadOtherCustomOK, obj, "",
					"also held by CUSTOM provider %s; istiod runs with %s=true", strings.Join(h.others, ", "), MultipleCustomProvidersEnv))
			} else {
				out = append(out, newFinding(CodeWorkloadOtherCustom, obj,
					"run istiod (Istio ≥ 1.30) with "+MultipleCustomProvidersEnv+"=true, or target this "+wt.kind+" with one CUSTOM provider only",
					"targeted by meshwaf's waypoint policy and by CUSTOM provider %s: Istio applies one CUSTOM provider per waypoint", strings.Join(h.others, ", ")))
			}
		}
	}
	return out, covered
}

// waypointMissing says why no waypoint serves wt, or "" when one does.
func waypointMissing(s *Snapshot, wt waypointTarget) string {
	switch wt.kind {
	case "Gateway":
		for _, w := range s.Workloads {
			if w.isWaypoint() && w.Namespace == wt.namespace && w.Labels[GatewayNameLabel] == wt.name {
				return ""
			}
		}
		return fmt.Sprintf("no waypoint proxy serves Gateway %s/%s (no workload labelled %s=%s, %s=%s)",
			wt.namespace, wt.name, WaypointManagedLabel, WaypointManagedValue, GatewayNameLabel, wt.name)
	case "Service":
		useWaypoint := label.IoIstioUseWaypoint.Name
		for _, svc := range s.Services {
			if svc.Namespace != wt.namespace || svc.Name != wt.name {
				continue
			}
			if v := svc.Labels[useWaypoint]; v != "" && v != "none" {
				return ""
			}
			if v := svc.Labels[useWaypoint]; v == "none" {
				return fmt.Sprintf("the Service opts out of waypoints (%s: none)", useWaypoint)
			}
			for _, ns := range s.Namespaces {
				if ns.Name == wt.namespace && ns.Labels[useWaypoint] != "" && ns.Labels[useWaypoint] != "none" {
					return ""
				}
			}
			return fmt.Sprintf("neither the Service nor namespace %s has %s, so no waypoint handles its traffic", wt.namespace, useWaypoint)
		}
		return "the Service does not exist"
	}
	return "" // other kinds (a GatewayClass, a ServiceEntry): not checked
}

func waypointFix(wt waypointTarget) string {
	if wt.kind == "Gateway" {
		return fmt.Sprintf("istioctl waypoint apply -n %s --name %s", wt.namespace, wt.name)
	}
	return fmt.Sprintf("kubectl label namespace %s %s=waypoint (or label the Service)", wt.namespace, label.IoIstioUseWaypoint.Name)
}
