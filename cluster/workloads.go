package cluster

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	networkingv1alpha3api "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// extAuthzFilterName is the Envoy HTTP filter meshwaf's EnvoyFilter inserts.
const extAuthzFilterName = "envoy.filters.http.ext_authz"

// selects reports whether a policy of namespace ns with selector sel
// applies to the sidecar of w, with Istio's scoping: a policy in the root
// namespace applies in every namespace, any other in its own; no selector
// selects every workload in scope.
func selects(ns, root string, sel map[string]string, w Workload) bool {
	if ns != root && ns != w.Namespace {
		return false
	}
	for k, v := range sel {
		if w.Labels[k] != v {
			return false
		}
	}
	return true
}

// policySelects reports whether p applies to w's sidecar. Policies
// attached with targetRefs apply to waypoints and gateways, not sidecars.
func policySelects(p *securityv1.AuthorizationPolicy, root string, w Workload) bool {
	if len(p.Spec.GetTargetRefs()) > 0 || p.Spec.GetTargetRef() != nil {
		return false
	}
	return selects(p.Namespace, root, p.Spec.GetSelector().GetMatchLabels(), w)
}

// filterSelects reports whether f applies to w's proxy.
func filterSelects(f *networkingv1alpha3.EnvoyFilter, root string, w Workload) bool {
	if len(f.Spec.GetTargetRefs()) > 0 {
		return false
	}
	return selects(f.Namespace, root, f.Spec.GetWorkloadSelector().GetLabels(), w)
}

// customProvider is the provider of a CUSTOM policy, "" for other actions.
func customProvider(p *securityv1.AuthorizationPolicy) string {
	if p.Spec.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
		return ""
	}
	return p.Spec.GetProvider().GetName()
}

// customPoliciesNaming lists the CUSTOM policies that name provider.
func customPoliciesNaming(s *Snapshot, provider string) []string {
	var out []string
	for _, p := range s.AuthorizationPolicies {
		if customProvider(p) == provider {
			out = append(out, p.Namespace+"/"+p.Name)
		}
	}
	sort.Strings(out)
	return out
}

// isMeshwafFilter reports whether f inserts Envoy's ext_authz filter
// calling meshwaf's Service (the envoyfilter mode's object).
func isMeshwafFilter(f *networkingv1alpha3.EnvoyFilter, t Target) bool {
	for _, cp := range f.Spec.GetConfigPatches() {
		if cp.GetApplyTo() != networkingv1alpha3api.EnvoyFilter_HTTP_FILTER {
			continue
		}
		v := cp.GetPatch().GetValue().GetFields()
		if v["name"].GetStringValue() != extAuthzFilterName {
			continue
		}
		grpc := field(v["typed_config"], "grpc_service")
		envoy := field(grpc, "envoy_grpc")
		cluster := field(envoy, "cluster_name").GetStringValue()
		authority := field(envoy, "authority").GetStringValue()
		if strings.HasSuffix(cluster, "||"+t.ServiceHost()) || authority == t.ServiceHost() {
			return true
		}
	}
	return false
}

// field is the struct field name of v (nil when v is not a struct).
func field(v *structpb.Value, name string) *structpb.Value {
	return v.GetStructValue().GetFields()[name]
}

// meshwafFilters are the EnvoyFilters of the envoyfilter mode.
func meshwafFilters(s *Snapshot, t Target) []*networkingv1alpha3.EnvoyFilter {
	var out []*networkingv1alpha3.EnvoyFilter
	for _, f := range s.EnvoyFilters {
		if isMeshwafFilter(f, t) {
			out = append(out, f)
		}
	}
	return out
}

// multipleCustomAllowed reports whether an istiod runs with
// PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS=true.
func multipleCustomAllowed(s *Snapshot) bool {
	for _, d := range s.Istiod {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.Name == MultipleCustomProvidersEnv && strings.EqualFold(e.Value, "true") {
					return true
				}
			}
		}
	}
	return false
}

// checkWorkloads says which workloads are under inspection and by which
// mode, and finds opted-in workloads under none, workloads whose meshwaf
// CUSTOM policy meets another provider's, and workloads inspected twice;
// the waypoint mode's targets are checked by checkWaypointTargets.
func checkWorkloads(s *Snapshot, t Target, m meshState) []Finding {
	root := m.rootNamespace()
	filters := meshwafFilters(s, t)
	multiple := multipleCustomAllowed(s)
	var out []Finding
	var optedIn, covered int
	for _, w := range s.Workloads {
		if w.isWaypoint() {
			continue
		}
		labelled := w.Labels[t.OptInLabel] == t.OptInValue
		if labelled {
			optedIn++
		}
		var modes, others, broken []string
		var custom, filtered bool
		for _, p := range s.AuthorizationPolicies {
			if !policySelects(p, root, w) {
				continue
			}
			switch prov := customProvider(p); prov {
			case "":
			case t.ProviderName, t.LocalProviderName():
				if m.mc != nil && !m.has(prov) {
					broken = append(broken, fmt.Sprintf("AuthorizationPolicy %s/%s names provider %q, which the mesh config lacks", p.Namespace, p.Name, prov))
					continue
				}
				custom = true
				mode := "mesh"
				if prov == t.LocalProviderName() {
					mode = "pod"
				}
				modes = append(modes, fmt.Sprintf("%s (AuthorizationPolicy %s/%s)", mode, p.Namespace, p.Name))
			default:
				others = append(others, fmt.Sprintf("%q (AuthorizationPolicy %s/%s)", prov, p.Namespace, p.Name))
			}
		}
		for _, f := range filters {
			if filterSelects(f, root, w) {
				filtered = true
				modes = append(modes, fmt.Sprintf("envoyfilter (EnvoyFilter %s/%s)", f.Namespace, f.Name))
			}
		}
		slices.Sort(modes)
		slices.Sort(others)
		obj := w.object()
		switch {
		case len(modes) > 0:
			covered++
			out = append(out, newFinding(CodeWorkloadInspected, obj, "", "inspected by meshwaf: %s", strings.Join(modes, ", ")))
		case labelled && len(broken) > 0:
			slices.Sort(broken)
			out = append(out, newFinding(CodeWorkloadUncovered, obj,
				"add the provider to the mesh config (see "+string(CodeProviderMissing)+")",
				"labelled %s=%s, but its requests do not reach meshwaf: %s", t.OptInLabel, t.OptInValue, strings.Join(broken, "; ")))
		case labelled:
			out = append(out, newFinding(CodeWorkloadUncovered, obj,
				"apply meshwaf's CUSTOM AuthorizationPolicy (meshwaf manifests --mode mesh) or EnvoyFilter (--mode envoyfilter) in "+root,
				"labelled %s=%s, but no meshwaf CUSTOM policy or EnvoyFilter selects it: its requests are not inspected", t.OptInLabel, t.OptInValue))
		}
		if custom && len(others) > 0 {
			if multiple {
				out = append(out, newFinding(CodeWorkloadOtherCustomOK, obj, "",
					"also held by CUSTOM provider %s; istiod runs with %s=true", strings.Join(others, ", "), MultipleCustomProvidersEnv))
			} else {
				out = append(out, newFinding(CodeWorkloadOtherCustom, obj,
					"inspect this workload with meshwaf's EnvoyFilter (meshwaf manifests --mode envoyfilter) and exclude it from meshwaf's CUSTOM policy, or run istiod (Istio ≥ 1.30) with "+MultipleCustomProvidersEnv+"=true",
					"selected by meshwaf's CUSTOM policy and by CUSTOM provider %s: Istio applies one CUSTOM provider per workload", strings.Join(others, ", ")))
			}
		}
		if custom && filtered {
			out = append(out, newFinding(CodeWorkloadInspectedTwice, obj,
				"keep one mode: remove the workload from the CUSTOM policy or from the EnvoyFilter",
				"inspected twice, by a CUSTOM policy and by an EnvoyFilter: %s", strings.Join(modes, ", ")))
		}
	}
	waypoints, n := checkWaypointTargets(s, t, m)
	out = append(out, waypoints...)
	if optedIn == 0 && covered+n == 0 {
		out = append(out, newFinding(CodeNoWorkloadOptedIn, Object{Kind: "Label", Name: t.OptInLabel + "=" + t.OptInValue},
			fmt.Sprintf("label a workload's pod template: %s: %s", t.OptInLabel, t.OptInValue),
			"no workload carries %s=%s, and none is under inspection", t.OptInLabel, t.OptInValue))
	}
	return out
}
