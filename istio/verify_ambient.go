package istio

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// Labels of the destinations of the waypoint view EvaluateAmbient builds:
// a policy attached with targetRefs becomes a policy selecting them.
const (
	targetServiceLabel = "meshwaf.io/x-target-service"
	targetGatewayLabel = "meshwaf.io/x-target-gateway"
	targetClassLabel   = "meshwaf.io/x-target-gatewayclass"
)

// EvaluateAmbient computes which sources of an ambient plan
// (meshpolicy.NewAmbientPlan) reach which destination ports under
// policies, with the semantics of Istio's ambient data plane:
//
//   - ztunnel enforces the policies without targetRefs, scoped and selected
//     as for sidecars, at the destination workload, and sees only L4: as
//     Istio's ambient conversion does, an ALLOW rule with HTTP attributes
//     (methods, paths, hosts, requestPrincipals, remoteIpBlocks, `when`
//     keys other than source.ip, source.namespace, source.principal,
//     destination.ip and destination.port) never matches, and a DENY rule
//     is enforced without them. Each such policy gets a warning note.
//   - A waypoint enforces only policies with targetRefs: kind Service (group
//     "") naming a Service behind it in the policy's namespace, kind Gateway
//     naming the waypoint, or kind GatewayClass istio-waypoint from the root
//     namespace. Selector and namespace-wide policies never apply to it. It
//     sees HTTP, with Evaluate's semantics.
//   - A flow through a waypoint (meshpolicy.Plan.Via) is allowed when the
//     waypoint admits the caller and the destination's ztunnel admits the
//     waypoint's identity; other flows only need the destination's ztunnel
//     to admit the caller.
//
// notes lists every policy ignored or only partly understood, and the L7
// warnings.
func EvaluateAmbient(plan *meshpolicy.Plan, policies []Policy, opts EvalOptions) (*meshpolicy.Reachability, []string) {
	if opts.RootNamespace == "" {
		opts.RootNamespace = istioRootNamespace
	}
	var zt, wp []Policy
	var notes []string
	for _, p := range policies {
		spec := &p.Object.Spec
		if len(spec.TargetRefs) > 0 || spec.TargetRef != nil { //nolint:staticcheck // TargetRef is deprecated but still read by Istio
			wp = append(wp, waypointCopies(p, opts.RootNamespace, &notes)...)
			continue
		}
		zt = append(zt, p)
		if n := ztunnelL7Note(p); n != "" {
			notes = append(notes, n)
		}
	}

	// ztunnel: every port is L4.
	ztPlan := *plan
	ztPlan.Destinations = make([]meshpolicy.Destination, len(plan.Destinations))
	for i, d := range plan.Destinations {
		d.Ports = append([]meshpolicy.DestPort(nil), d.Ports...)
		for j := range d.Ports {
			d.Ports[j].Protocol = "TCP"
		}
		ztPlan.Destinations[i] = d
	}
	ztReach, ztNotes := Evaluate(&ztPlan, zt, opts)

	// waypoints: only the targetRefs copies select these labels.
	wpPlan := *plan
	wpPlan.Destinations = make([]meshpolicy.Destination, len(plan.Destinations))
	waypointName := map[string]string{}
	for _, w := range plan.Waypoints() {
		waypointName[w.ID] = w.Name
	}
	for i, d := range plan.Destinations {
		d.Labels = map[string]string{targetServiceLabel: "-"}
		if d.Waypoint != "" {
			d.Labels = map[string]string{targetServiceLabel: d.Name, targetGatewayLabel: waypointName[d.Waypoint], targetClassLabel: waypointClass}
		}
		wpPlan.Destinations[i] = d
	}
	wpReach, wpNotes := Evaluate(&wpPlan, wp, opts)

	reach := meshpolicy.NewReachability(plan)
	for i, d := range plan.Destinations {
		for j := range d.Ports {
			k := plan.DestPortIndex(i, j)
			for s := range plan.Sources {
				z := s
				w := plan.Via(s, i)
				if w >= 0 {
					z = w
				}
				st := cellState(ztReach, k, z)
				partial := st == triYes && ztReach.Partial[k].Has(z)
				if w >= 0 {
					ws := cellState(wpReach, k, s)
					partial = partial || (ws == triYes && wpReach.Partial[k].Has(s))
					st = min(st, ws)
				}
				switch st {
				case triYes:
					reach.Allowed[k].Set(s)
					if partial {
						reach.Partial[k].Set(s)
					}
				case triMaybe:
					reach.Conditional[k].Set(s)
				}
			}
		}
	}
	// ztunnel sees no requests: only the waypoint narrows.
	reach.Narrowings = wpReach.Narrowings
	notes = append(append(notes, ztNotes...), wpNotes...)
	return reach, uniqNotes(notes)
}

// cellState reads one cell of a reachability as a three-valued truth.
func cellState(r *meshpolicy.Reachability, k, s int) tri {
	switch {
	case r.Allowed[k].Has(s):
		return triYes
	case r.Conditional[k].Has(s):
		return triMaybe
	}
	return triNo
}

// waypointCopies turns a policy attached with targetRefs into one policy
// per target that selects the waypoint view's labels, so that Evaluate
// applies it where a waypoint would. Targets that no waypoint of the plan
// can carry are noted.
func waypointCopies(p Policy, root string, notes *[]string) []Policy {
	ap := p.Object
	refs := ap.Spec.TargetRefs
	if ap.Spec.TargetRef != nil { //nolint:staticcheck // TargetRef is deprecated but still read by Istio
		refs = append([]*typev1beta1.PolicyTargetReference{ap.Spec.TargetRef}, refs...) //nolint:staticcheck // as above
	}
	var out []Policy
	for _, ref := range refs {
		var label string
		switch {
		case ref.GetKind() == kindService && (ref.GetGroup() == "" || ref.GetGroup() == "core"):
			label = targetServiceLabel
		case ref.GetKind() == kindGateway && ref.GetGroup() == gatewayAPIGroup:
			label = targetGatewayLabel
		case ref.GetKind() == kindGatewayCls && ref.GetGroup() == gatewayAPIGroup && ref.GetName() == waypointClass && ap.Namespace == root:
			label = targetClassLabel
		default:
			*notes = append(*notes, fmt.Sprintf("%s: %s/%s: targetRef %s %s/%s is not a Service, waypoint or the waypoint class in the root namespace: ignored",
				p.Origin, ap.Namespace, ap.Name, ref.GetGroup(), ref.GetKind(), ref.GetName()))
			continue
		}
		c := &securityv1.AuthorizationPolicy{TypeMeta: ap.TypeMeta}
		ap.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
		proto.Merge(&c.Spec, &ap.Spec)
		c.Spec.TargetRefs = nil
		c.Spec.TargetRef = nil //nolint:staticcheck // cleared on the copy
		c.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{label: ref.GetName()}}
		out = append(out, Policy{Origin: p.Origin, Object: c})
	}
	return out
}

// ztunnelL7Note warns about a policy bound to ztunnel (no targetRefs) that
// uses HTTP attributes. Istio's ambient conversion (the pinned istio.io/istio,
// pilot/pkg/serviceregistry/ambient/authorization.go) omits such rules from
// an ALLOW policy, so they match nothing and the policy denies what they
// meant to admit, and enforces a DENY policy without them, so it denies
// more; istio.io's "Use Layer 4 security policy" page
// (docs/ambient/usage/l4-policy) lists the attributes ztunnel supports and
// says L7 policies must attach to a waypoint with targetRef(s).
func ztunnelL7Note(p Policy) string {
	ap := p.Object
	spec := &ap.Spec
	if ap.Annotations[DryRunAnnotation] == "true" {
		return ""
	}
	var found []string
	for _, r := range spec.Rules {
		found = append(found, l7Attributes(r)...)
	}
	if len(found) == 0 {
		return ""
	}
	sort.Strings(found)
	found = uniqSorted(found)
	effect := "its rules with them never match, so it denies what they were meant to allow"
	switch spec.Action {
	case securityv1beta1.AuthorizationPolicy_DENY:
		effect = "it is enforced without them, so it denies more than written"
	case securityv1beta1.AuthorizationPolicy_ALLOW:
	default:
		return ""
	}
	return fmt.Sprintf("warning: %s: %s/%s: %s %s bound to ztunnel (no targetRefs), which enforces L4 only: %s; attach it to a waypoint with targetRefs",
		p.Origin, ap.Namespace, ap.Name, spec.Action, strings.Join(found, ", "), effect)
}

// l7Attributes lists the attributes of r that ztunnel cannot enforce.
func l7Attributes(r *securityv1beta1.Rule) []string {
	var out []string
	add := func(name string, n int) {
		if n > 0 {
			out = append(out, name)
		}
	}
	for _, t := range r.To {
		o := t.GetOperation()
		add("hosts", len(o.GetHosts()))
		add("notHosts", len(o.GetNotHosts()))
		add("methods", len(o.GetMethods()))
		add("notMethods", len(o.GetNotMethods()))
		add("paths", len(o.GetPaths()))
		add("notPaths", len(o.GetNotPaths()))
	}
	for _, f := range r.From {
		s := f.GetSource()
		add("remoteIpBlocks", len(s.GetRemoteIpBlocks()))
		add("notRemoteIpBlocks", len(s.GetNotRemoteIpBlocks()))
		add("requestPrincipals", len(s.GetRequestPrincipals()))
		add("notRequestPrincipals", len(s.GetNotRequestPrincipals()))
	}
	for _, c := range r.When {
		switch k := c.GetKey(); k {
		case "source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port":
		default:
			out = append(out, "when "+k)
		}
	}
	return out
}

func uniqNotes(notes []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range notes {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
