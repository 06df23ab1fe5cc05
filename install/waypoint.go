package install

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The targetRef kinds a waypoint's CUSTOM policy attaches to.
const (
	gatewayGroup = "gateway.networking.k8s.io"
	gatewayKind  = "Gateway"
	serviceKind  = "Service"
)

// maxTargetRefs is the CRD's limit of targetRefs in one policy.
const maxTargetRefs = 16

// DefaultWaypointName is the Gateway `istioctl waypoint apply` creates.
const DefaultWaypointName = "waypoint"

// DefaultWaypointNamespaces are the namespaces the waypoint mode inspects
// by default: default, the one Istio's ambient getting-started enrolls.
func DefaultWaypointNamespaces() []string { return []string{"default"} }

// ServiceRef names a Kubernetes Service.
type ServiceRef struct {
	Namespace, Name string
}

func (s ServiceRef) String() string { return s.Namespace + "/" + s.Name }

// waypointPolicyNote is the annotation of the waypoint mode's policies.
const waypointPolicyNote = "Attached with targetRefs: waypoints ignore selector-based policies. A Service target takes " +
	"effect only when the Service uses a waypoint (istio.io/use-waypoint); the Gateway target covers everything that " +
	"waypoint serves. One CUSTOM provider per waypoint unless istiod runs with " +
	"PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS (Istio 1.30+); EnvoyFilter is unsupported on waypoints. " +
	"CUSTOM policies cannot be dry-run."

// validateWaypoint reports the waypoint mode's options that cannot be
// rendered: a bad name, a namespace or Service named twice, a Service of a
// namespace inspected whole, or nothing to inspect.
func (o Options) validateWaypoint() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, m := range validation.IsDNS1123Label(o.WaypointName) {
		bad("waypoint name %q: %s", o.WaypointName, m)
	}
	whole := map[string]bool{}
	for _, ns := range o.WaypointNamespaces {
		for _, m := range validation.IsDNS1123Label(ns) {
			bad("waypoint namespace %q: %s", ns, m)
		}
		if whole[ns] {
			bad("waypoint namespace %q: named twice", ns)
		}
		whole[ns] = true
	}
	seen := map[ServiceRef]bool{}
	for _, s := range o.WaypointServices {
		for _, m := range validation.IsDNS1123Label(s.Namespace) {
			bad("waypoint service %q: namespace: %s", s, m)
		}
		for _, m := range validation.IsDNS1035Label(s.Name) {
			bad("waypoint service %q: name: %s", s, m)
		}
		if seen[s] {
			bad("waypoint service %q: named twice", s)
		}
		seen[s] = true
		if whole[s.Namespace] {
			bad("waypoint service %q: its namespace is inspected whole (--waypoint-namespace %s)", s, s.Namespace)
		}
	}
	perNamespace := map[string]int{}
	for s := range seen {
		perNamespace[s.Namespace]++
	}
	for _, ns := range slices.Sorted(maps.Keys(perNamespace)) {
		if n := perNamespace[ns]; n > maxTargetRefs {
			bad("waypoint services of namespace %q: %d, one policy takes at most %d targetRefs: inspect the namespace whole", ns, n, maxTargetRefs)
		}
	}
	if len(o.WaypointNamespaces) == 0 && len(o.WaypointServices) == 0 {
		bad("waypoint mode: no waypoint namespace or service: name at least one to inspect")
	}
	return optionsError(errs)
}

// waypointPolicies are the waypoint mode's CUSTOM policies, one per
// namespace, ordered by namespace: for a namespace of WaypointNamespaces
// it targets the namespace's waypoint Gateway (every request the waypoint
// serves); otherwise it targets that namespace's WaypointServices. Each
// sends every request but those to ExcludePaths to meshwaf's provider.
func waypointPolicies(o Options) ([]any, error) {
	if err := o.validateWaypoint(); err != nil {
		return nil, err
	}
	targets := map[string][]*typev1beta1.PolicyTargetReference{}
	for _, ns := range o.WaypointNamespaces {
		targets[ns] = []*typev1beta1.PolicyTargetReference{{Group: gatewayGroup, Kind: gatewayKind, Name: o.WaypointName}}
	}
	services := slices.Clone(o.WaypointServices)
	slices.SortFunc(services, func(a, b ServiceRef) int { return cmp.Compare(a.Name, b.Name) })
	for _, s := range services {
		targets[s.Namespace] = append(targets[s.Namespace], &typev1beta1.PolicyTargetReference{Group: "", Kind: serviceKind, Name: s.Name})
	}
	namespaces := make([]string, 0, len(targets))
	for ns := range targets {
		namespaces = append(namespaces, ns)
	}
	slices.Sort(namespaces)
	out := make([]any, 0, len(namespaces))
	for _, ns := range namespaces {
		out = append(out, waypointPolicy(o, ns, targets[ns]))
	}
	if len(out) == 0 {
		return nil, errors.New("waypoint mode: no policy") // validateWaypoint refuses this first
	}
	return out, nil
}

// waypointPolicy is one namespace's CUSTOM policy of the waypoint mode.
func waypointPolicy(o Options, namespace string, targets []*typev1beta1.PolicyTargetReference) *securityv1.AuthorizationPolicy {
	rule := &securityv1beta1.Rule{}
	if len(o.ExcludePaths) > 0 {
		rule.To = []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{NotPaths: o.ExcludePaths}}}
	}
	return &securityv1.AuthorizationPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Name: o.ServiceName + "-inspect", Namespace: namespace, Labels: o.labels(),
			Annotations: map[string]string{NoteAnnotation: waypointPolicyNote},
		},
		Spec: securityv1beta1.AuthorizationPolicy{
			TargetRefs: targets,
			Action:     securityv1beta1.AuthorizationPolicy_CUSTOM,
			ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{
				Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: o.ProviderName},
			},
			Rules: []*securityv1beta1.Rule{rule},
		},
	}
}
