// Package meshpolicy holds meshwaf's segmentation model: the ServiceGraph
// (which services exist and who may call whom on which ports), its strict
// decoding and validation with precise errors, the plan derived from it
// (for each destination workload and port, the source identities allowed)
// and the reachability diff between a plan and the flows a set of policies
// allows. It knows nothing about Istio's object types.
package meshpolicy

import (
	"strings"

	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/internal/fielderr"
)

// The document type a graph file declares.
const (
	APIVersion = "meshwaf.io/v1alpha1"
	Kind       = "ServiceGraph"
)

// Defaults of a graph's optional fields.
const (
	DefaultTrustDomain = "cluster.local"
	// DefaultServiceNamespace is the namespace of a service that names
	// none; DefaultMeshwafNamespace is the one meshwaf runs in.
	DefaultServiceNamespace  = "default"
	DefaultMeshwafNamespace  = "meshwaf-system"
	DefaultMeshwafSA         = "meshwaf"
	DefaultGRPCPort          = defaults.GRPCPort
	DefaultMetricsPort       = defaults.AdminPort
	DefaultIngressNamespace  = "istio-system"
	DefaultIngressSA         = "istio-ingressgateway-service-account"
	DefaultProtocol          = "TCP"
	defaultSelectorLabelName = "app"
)

// DefaultMeshwafSelector is the label set of meshwaf's own pods when the
// graph names none.
func DefaultMeshwafSelector() map[string]string { return map[string]string{"app": "meshwaf"} }

// DefaultIngressSelector is the label set of the ingress gateway's pods when
// the graph names none (used by NetworkPolicies only).
func DefaultIngressSelector() map[string]string {
	return map[string]string{"istio": "ingressgateway"}
}

// Graph is a decoded and validated ServiceGraph with every default filled
// in and every edge resolved to "namespace/name" references.
type Graph struct {
	// Name is metadata.name.
	Name string
	// TrustDomain is the SPIFFE trust domain of principals.
	TrustDomain string
	Settings    Settings
	// Services in file order.
	Services []Service
	// Edges in file order, with From and To resolved.
	Edges []Edge
}

// Settings say where meshwaf runs, who scrapes metrics and who the ingress
// gateway is.
type Settings struct {
	Meshwaf Meshwaf
	// Scraper, when set, may reach meshwaf's metrics port and every service
	// port marked metrics.
	Scraper *Identity
	// IngressGateway may reach every non-metrics port of services with
	// ingress: true.
	IngressGateway Identity
}

// Meshwaf locates the meshwaf deployment the inspected sidecars call.
type Meshwaf struct {
	Namespace      string
	ServiceAccount string
	Selector       map[string]string
	GRPCPort       int
	MetricsPort    int
}

// Identity is a workload identity outside the graph's services: an explicit
// principal ("<trustDomain>/ns/<ns>/sa/<sa>") or a namespace and service
// account. Selector locates its pods for NetworkPolicies.
type Identity struct {
	Principal      string
	Namespace      string
	ServiceAccount string
	Selector       map[string]string
}

// PrincipalIn is the identity's Istio principal (no spiffe:// prefix).
func (i Identity) PrincipalIn(trustDomain string) string {
	if i.Principal != "" {
		return i.Principal
	}
	return Principal(trustDomain, i.Namespace, i.ServiceAccount)
}

// Principal is Istio's principal form of a service account:
// "<trustDomain>/ns/<namespace>/sa/<serviceAccount>".
func Principal(trustDomain, namespace, serviceAccount string) string {
	return trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// ParsePrincipal splits "<td>/ns/<ns>/sa/<sa>"; ok is false for other forms.
func ParsePrincipal(p string) (trustDomain, namespace, serviceAccount string, ok bool) {
	parts := strings.Split(p, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return "", "", "", false
	}
	return parts[0], parts[2], parts[4], true
}

// Service is one workload of the graph.
type Service struct {
	Name           string
	Namespace      string
	ServiceAccount string
	// Selector is the workload's pod labels (default app: <name>).
	Selector map[string]string
	Ports    []Port
	// Ingress lets the ingress gateway reach the service's non-metrics ports.
	Ingress bool
	// Inspect opts the workload in to meshwaf inspection, so its sidecar must
	// reach meshwaf's gRPC port.
	Inspect bool
	// Waypoint is the name of the ambient waypoint (a Gateway of class
	// istio-waypoint in the service's namespace) the service's traffic goes
	// through, as its istio.io/use-waypoint label says; empty for none. Only
	// ambient generation reads it.
	Waypoint string
}

// Ref is the service's canonical reference "namespace/name".
func (s Service) Ref() string { return s.Namespace + "/" + s.Name }

// Port is one port a service listens on.
type Port struct {
	Port int
	// Protocol is HTTP, HTTP2, GRPC, TCP or TLS (default TCP).
	Protocol string
	// Metrics marks a port the scraper may reach.
	Metrics bool
}

// IsHTTP reports whether requests on the port have methods and paths.
func (p Port) IsHTTP() bool {
	switch p.Protocol {
	case "HTTP", "HTTP2", "GRPC":
		return true
	}
	return false
}

// Port returns the service's declared port number p.
func (s Service) Port(p int) (Port, bool) {
	for _, sp := range s.Ports {
		if sp.Port == p {
			return sp, true
		}
	}
	return Port{}, false
}

// Edge allows From to call To on Ports, optionally only with the given HTTP
// methods and paths (empty means any).
type Edge struct {
	From, To string // "namespace/name"
	Ports    []int
	Methods  []string
	Paths    []string
}

// Narrowed reports whether the edge allows only some HTTP requests.
func (e Edge) Narrowed() bool { return len(e.Methods) > 0 || len(e.Paths) > 0 }

// Service returns the service with reference "namespace/name".
func (g *Graph) Service(ref string) (*Service, bool) {
	for i := range g.Services {
		if g.Services[i].Ref() == ref {
			return &g.Services[i], true
		}
	}
	return nil, false
}

// ErrorList is every problem found in one graph file, in file order, each
// located by file, line, column and field path (e.g.
// spec.services[1].ports[0].port); YAML syntax errors have no column and
// no path.
type ErrorList []*fielderr.Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find each *fielderr.Error.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}
