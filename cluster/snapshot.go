package cluster

import (
	"time"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Target names meshwaf's install and what its checks expect; NewTarget
// makes one from install options.
type Target struct {
	// Namespace and ServiceName locate meshwaf's Deployment, Service and
	// ConfigMap (one name for the three).
	Namespace   string
	ServiceName string
	// ProviderName is the extension provider of the mesh mode; the pod
	// mode's is ProviderName + "-local".
	ProviderName string
	// IstioNamespace holds the mesh config ConfigMap and istiod.
	IstioNamespace string
	// MeshConfigMap is the ConfigMap with Istio's mesh config (key "mesh"):
	// "istio", or "istio-REVISION".
	MeshConfigMap string
	ClusterDomain string
	// GRPCPort is meshwaf's ext_authz port, named by the provider.
	GRPCPort int32
	// ConfigKey is the key of meshwaf's config file in its ConfigMap.
	ConfigKey string
	// OptInLabel and OptInValue opt a workload in to inspection.
	OptInLabel, OptInValue string
	// MinTimeout and MaxTimeout bound the provider's timeout: below the
	// minimum, checks of large bodies time out; above the maximum, requests
	// hang that long when meshwaf does.
	MinTimeout, MaxTimeout time.Duration
	// ParseConfig reads meshwaf's config file as `meshwaf serve` would.
	ParseConfig func(data []byte) (MeshwafConfig, error)
}

// LocalProviderName is the pod mode's provider name.
func (t Target) LocalProviderName() string { return t.ProviderName + "-local" }

// ServiceHost is the FQDN of meshwaf's Service.
func (t Target) ServiceHost() string {
	return t.ServiceName + "." + t.Namespace + ".svc." + t.ClusterDomain
}

// MeshwafConfig is what the checks need from meshwaf's config file.
type MeshwafConfig struct {
	// RequestBodyLimit is the default profile's body limit, in bytes.
	RequestBodyLimit int
	// AllowPartialBody is the default profile's setting: whether a body
	// cut by the proxy passes.
	AllowPartialBody bool
	// QueueWait is how long a check may wait for room before it gets the
	// failure policy.
	QueueWait time.Duration
}

// Health is the outcome of the gRPC health probe.
type Health struct {
	// Probed is false when the probe was skipped.
	Probed bool
	// Address is what was dialled.
	Address string
	// Reachable is false when no answer came (no route, no DNS, refused,
	// timed out, or mTLS required by the mesh).
	Reachable bool
	// Status is the health status answered ("SERVING", "NOT_SERVING", ...).
	Status string
	// Err says why the probe got no answer.
	Err string
}

// Snapshot is what doctor reads from a cluster. A nil pointer is an object
// that does not exist.
type Snapshot struct {
	// MeshConfig is the ConfigMap holding Istio's mesh config.
	MeshConfig *corev1.ConfigMap
	// Istiod are the istiod Deployments (label app=istiod) of the Istio
	// namespace.
	Istiod []appsv1.Deployment

	Deployment    *appsv1.Deployment
	Service       *corev1.Service
	MeshwafConfig *corev1.ConfigMap
	Health        Health

	// Workloads are the Deployments, StatefulSets and DaemonSets, and the
	// pods no controller owns, of every namespace.
	Workloads []Workload
	// Services and Namespaces are every Service and Namespace, with their
	// labels (a waypoint target takes effect only where
	// istio.io/use-waypoint is set).
	Services              []Labelled
	Namespaces            []Labelled
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	EnvoyFilters          []*networkingv1alpha3.EnvoyFilter
}

// Workload is what the checks need of one workload: its identity and the
// labels of its pods.
type Workload struct {
	Kind, Namespace, Name string
	// Labels are the pod (template) labels.
	Labels map[string]string
}

// Labelled is an object's identity and labels.
type Labelled struct {
	Namespace, Name string
	Labels          map[string]string
}

func (w Workload) object() Object { return Object{Kind: w.Kind, Namespace: w.Namespace, Name: w.Name} }

// Labels and values of Istio's that the checks read.
const (
	// WaypointManagedLabel and WaypointManagedValue mark a waypoint proxy's
	// Deployment and pods.
	WaypointManagedLabel = "gateway.istio.io/managed"
	WaypointManagedValue = "istio.io-mesh-controller"
	// GatewayNameLabel names the Gateway a waypoint's pods serve.
	GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"
	// MultipleCustomProvidersEnv on istiod lets a workload have more than
	// one CUSTOM provider (Istio ≥ 1.30).
	MultipleCustomProvidersEnv = "PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS"
	// MeshConfigKey is the key of the mesh config in its ConfigMap.
	MeshConfigKey = "mesh"
	// DefaultRootNamespace is Istio's config root namespace when the mesh
	// config names none.
	DefaultRootNamespace = "istio-system"
)

// isWaypoint reports whether w is a waypoint proxy.
func (w Workload) isWaypoint() bool { return w.Labels[WaypointManagedLabel] == WaypointManagedValue }
