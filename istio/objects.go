package istio

import (
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/meshwaf/meshwaf/meshpolicy"
)

// AuthorizationPolicies are the objects Generate writes for the istio
// format, in the same order: per namespace allow-nothing first, then the
// ALLOW policies by name. dryRun adds istio.io/dry-run: "true".
func AuthorizationPolicies(plan *meshpolicy.Plan, dryRun bool) []*securityv1.AuthorizationPolicy {
	return authorizationPolicies(plan, dryRun)
}
