package install

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/internal/kubeyaml"
	"github.com/meshwaf/meshwaf/internal/version"
)

// Mode is one way of wiring meshwaf into Istio.
type Mode string

// The install modes.
const (
	// ModeMesh registers meshwaf as a MeshConfig extension provider
	// (istioctl install -f) and selects workloads with a CUSTOM
	// AuthorizationPolicy in the root namespace.
	ModeMesh Mode = "mesh"
	// ModeEnvoyFilter inserts Envoy's ext_authz filter with an EnvoyFilter,
	// for workloads that already use another CUSTOM provider.
	ModeEnvoyFilter Mode = "envoyfilter"
	// ModePod runs meshwaf as a container in each opted-in pod, reached
	// by the pod's sidecar on 127.0.0.1 through a ServiceEntry.
	ModePod Mode = "pod"
	// ModeWaypoint is for ambient meshes: meshwaf's extension provider
	// as in ModeMesh, and CUSTOM AuthorizationPolicies attached with
	// targetRefs to the waypoint of each inspected namespace or to the
	// inspected Services.
	ModeWaypoint Mode = "waypoint"
)

// Modes lists the install modes in documentation order.
func Modes() []Mode { return []Mode{ModeMesh, ModeEnvoyFilter, ModePod, ModeWaypoint} }

// DefaultImage is the image `docker build -t meshwaf:VERSION .` makes, tagged
// with this tree's version. Push it to your registry and pass its name
// (--image), or rename it with kustomize's images: name: meshwaf.
var DefaultImage = "meshwaf:" + version.Release

// Names and defaults of the install.
const (
	// DefaultMeshwafNamespace is the namespace meshwaf is installed in:
	// its Deployment, Service and ConfigMap (Options.Namespace).
	DefaultMeshwafNamespace = "meshwaf-system"
	// DefaultRootNamespace is Istio's config root namespace.
	DefaultRootNamespace = "istio-system"
	DefaultServiceName   = "meshwaf"
	DefaultProviderName  = "meshwaf"
	DefaultGRPCPort      = defaults.GRPCPort
	DefaultMetricsPort   = defaults.AdminPort
	// DefaultTimeout bounds one check as Envoy sees it. Istio's own
	// provider default is 600 s, which would hold requests for minutes
	// when meshwaf hangs, so it is always set.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultStatusOnError is what Envoy answers when meshwaf cannot be
	// reached or times out: 403, the same as meshwaf's own failureStatus
	// and Envoy's default, so a fail-closed outcome does not invite the
	// client retries a 503 would (which multiply load on a struggling
	// meshwaf).
	DefaultStatusOnError = http.StatusForbidden
	// DefaultRequestBodyLimit is meshwaf's defaultProfile.requestBodyLimit.
	DefaultRequestBodyLimit = defaults.RequestBodyLimit
	// DefaultMaxRequestBytes is the body Envoy buffers and sends; it must
	// not exceed RequestBodyLimit.
	DefaultMaxRequestBytes = DefaultRequestBodyLimit
	DefaultReplicas        = 2
	DefaultMaxReplicas     = 10
	DefaultLocalHost       = "meshwaf.local"
	DefaultClusterDomain   = "cluster.local"
	// NameLabel names meshwaf's own workload.
	NameLabel = "app.kubernetes.io/name"
	// ProfileContextKey is the context_extensions key that picks a
	// meshwaf profile per route.
	ProfileContextKey = defaults.ProfileContextKey
	// NoteAnnotation carries a human note on generated objects.
	NoteAnnotation = "meshwaf.io/note"
)

// DefaultExcludePaths are the health-check paths no CUSTOM policy sends to
// meshwaf.
func DefaultExcludePaths() []string { return []string{"/healthz", "/readyz", "/livez"} }

// Options are the settings of every install mode. Start from
// DefaultOptions; Render and KustomizeTree validate them.
type Options struct {
	// Namespace is the namespace meshwaf is installed in: it holds
	// meshwaf's Deployment and Service (mesh and envoyfilter modes).
	Namespace string
	// RootNamespace is Istio's config root namespace: the CUSTOM policy,
	// the EnvoyFilter and the ServiceEntry live there to apply mesh-wide.
	RootNamespace string
	// ServiceName names the Service, Deployment and ServiceAccount.
	ServiceName string
	// ProviderName is the MeshConfig extension provider's name (pod
	// mode appends "-local").
	ProviderName string
	// ClusterDomain is the Kubernetes cluster DNS domain.
	ClusterDomain string
	Image         string
	Replicas      int32
	MaxReplicas   int32
	GRPCPort      int32
	MetricsPort   int32
	// Timeout bounds one check (provider timeout / grpc_service timeout).
	Timeout time.Duration
	// FailOpen lets requests pass when meshwaf cannot answer. Default
	// false: fail closed.
	FailOpen bool
	// StatusOnError is the HTTP status Envoy answers when meshwaf cannot.
	StatusOnError int
	// MaxRequestBytes is the request body Envoy buffers and sends with
	// the check (includeRequestBodyInCheck / with_request_body).
	MaxRequestBytes uint32
	// AllowPartialMessage sends the first MaxRequestBytes of a longer
	// body (which meshwaf denies unless a profile allows partial bodies)
	// instead of Envoy answering 413.
	AllowPartialMessage bool
	// PackAsBytes sends the body as raw bytes (raw_body), so binary
	// bodies are not forced through a UTF-8 string.
	PackAsBytes bool
	// RequestBodyLimit is meshwaf's defaultProfile.requestBodyLimit in
	// the rendered config; MaxRequestBytes must not exceed it.
	RequestBodyLimit int
	// OptInLabel and OptInValue select the inspected workloads.
	OptInLabel string
	OptInValue string
	// ExcludePaths are never sent to meshwaf by the CUSTOM policy.
	ExcludePaths []string
	// ScraperNamespaces may scrape the metrics port over mTLS.
	ScraperNamespaces []string
	// CallerNamespaces, when set, are the only namespaces whose sidecars
	// may call meshwaf's gRPC port; empty lets any mesh identity (mTLS)
	// call it, which every opted-in workload needs unless it is listed.
	CallerNamespaces []string
	// LocalHost is the ServiceEntry host of pod mode.
	LocalHost string
	// WaypointName is the waypoint Gateway of each namespace of
	// WaypointNamespaces (waypoint mode).
	WaypointName string
	// WaypointNamespaces are inspected whole in waypoint mode: one policy
	// in each targets the namespace's waypoint Gateway.
	WaypointNamespaces []string
	// WaypointServices are inspected one by one in waypoint mode: one
	// policy per namespace targets them; each must use a waypoint.
	WaypointServices []ServiceRef
}

// DefaultOptions returns the defaults: fail closed, 403 on error,
// 500 ms timeout, bodies up to 1 MiB sent as bytes, two replicas.
func DefaultOptions() Options {
	return Options{
		Namespace:          DefaultMeshwafNamespace,
		RootNamespace:      DefaultRootNamespace,
		ServiceName:        DefaultServiceName,
		ProviderName:       DefaultProviderName,
		ClusterDomain:      DefaultClusterDomain,
		Image:              DefaultImage,
		Replicas:           DefaultReplicas,
		MaxReplicas:        DefaultMaxReplicas,
		GRPCPort:           DefaultGRPCPort,
		MetricsPort:        DefaultMetricsPort,
		Timeout:            DefaultTimeout,
		StatusOnError:      DefaultStatusOnError,
		MaxRequestBytes:    DefaultMaxRequestBytes,
		PackAsBytes:        true,
		RequestBodyLimit:   DefaultRequestBodyLimit,
		OptInLabel:         OptInLabel,
		OptInValue:         OptInValue,
		ExcludePaths:       DefaultExcludePaths(),
		ScraperNamespaces:  []string{"monitoring"},
		LocalHost:          DefaultLocalHost,
		WaypointName:       DefaultWaypointName,
		WaypointNamespaces: DefaultWaypointNamespaces(),
	}
}

// maxRequestBodyLimit is meshwaf's upper bound of requestBodyLimit.
const maxRequestBodyLimit = 64 << 20

// OptionsError reports install options, or a mode and part, that cannot
// be rendered: the caller's input, not a fault of the renderer.
type OptionsError struct {
	// Problems has one error per invalid or contradictory option.
	Problems []error
}

func (e *OptionsError) Error() string { return errors.Join(e.Problems...).Error() }

// Unwrap returns the problems.
func (e *OptionsError) Unwrap() []error { return e.Problems }

// optionsError is nil without problems, else an *OptionsError.
func optionsError(problems []error) error {
	if len(problems) == 0 {
		return nil
	}
	return &OptionsError{Problems: problems}
}

// validate reports every invalid or contradictory option at once, as an
// *OptionsError; nil when the options can be rendered.
func (o Options) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, f := range []struct{ name, v string }{
		{"namespace", o.Namespace}, {"root namespace", o.RootNamespace},
		{"service name", o.ServiceName},
	} {
		for _, m := range validation.IsDNS1123Label(f.v) {
			bad("%s %q: %s", f.name, f.v, m)
		}
	}
	for _, f := range []struct{ name, v string }{
		{"provider name", o.ProviderName}, {"cluster domain", o.ClusterDomain}, {"local host", o.LocalHost},
	} {
		for _, m := range validation.IsDNS1123Subdomain(f.v) {
			bad("%s %q: %s", f.name, f.v, m)
		}
	}
	if o.Image == "" || strings.ContainsAny(o.Image, " \t\n") {
		bad("image %q: want a name like <registry>/meshwaf:v1.2.3", o.Image)
	}
	if o.Replicas < 2 {
		bad("replicas %d: want at least 2, so a rollout or a lost node never leaves the mesh without meshwaf", o.Replicas)
	}
	if o.MaxReplicas < o.Replicas {
		bad("max replicas %d: below replicas %d", o.MaxReplicas, o.Replicas)
	}
	for _, p := range []struct {
		name string
		v    int32
	}{{"grpc port", o.GRPCPort}, {"metrics port", o.MetricsPort}} {
		if p.v < 1 || p.v > 65535 {
			bad("%s %d: not in 1-65535", p.name, p.v)
		}
	}
	if o.GRPCPort == o.MetricsPort {
		bad("grpc port and metrics port are both %d", o.GRPCPort)
	}
	if o.Timeout <= 0 {
		bad("timeout %s: must be positive (Istio's default would be 600s)", o.Timeout)
	} else if o.Timeout%time.Millisecond != 0 {
		bad("timeout %s: use whole milliseconds", o.Timeout)
	}
	if o.StatusOnError < 400 || o.StatusOnError > 599 {
		bad("status on error %d: want an HTTP 4xx or 5xx status", o.StatusOnError)
	} else if !envoyStatus(o.StatusOnError) {
		bad("status on error %d: Envoy's HttpStatus has no such code", o.StatusOnError)
	}
	if o.RequestBodyLimit < 1 || o.RequestBodyLimit > maxRequestBodyLimit {
		bad("request body limit %d: not between 1 and %d", o.RequestBodyLimit, maxRequestBodyLimit)
	}
	if o.MaxRequestBytes == 0 {
		bad("max request bytes: must be positive; meshwaf inspects bodies")
	} else if int64(o.MaxRequestBytes) > int64(o.RequestBodyLimit) {
		bad("max request bytes %d: above meshwaf's requestBodyLimit %d, so meshwaf would inspect only part of what Envoy sends", o.MaxRequestBytes, o.RequestBodyLimit)
	}
	for _, m := range validation.IsQualifiedName(o.OptInLabel) {
		bad("opt-in label %q: %s", o.OptInLabel, m)
	}
	for _, m := range validation.IsValidLabelValue(o.OptInValue) {
		bad("opt-in value %q: %s", o.OptInValue, m)
	}
	if o.OptInValue == "" {
		bad("opt-in value: must not be empty")
	}
	for _, p := range o.ExcludePaths {
		if !strings.HasPrefix(p, "/") && p != "*" && !strings.HasPrefix(p, "*") {
			bad("exclude path %q: want an absolute path, a prefix match /x/* or a suffix match */x", p)
		}
	}
	for _, ns := range o.ScraperNamespaces {
		for _, m := range validation.IsDNS1123Label(ns) {
			bad("scraper namespace %q: %s", ns, m)
		}
	}
	for _, ns := range o.CallerNamespaces {
		for _, m := range validation.IsDNS1123Label(ns) {
			bad("caller namespace %q: %s", ns, m)
		}
	}
	return optionsError(errs)
}

// serviceHost is the FQDN of meshwaf's Service.
func (o Options) serviceHost() string {
	return fmt.Sprintf("%s.%s.svc.%s", o.ServiceName, o.Namespace, o.ClusterDomain)
}

// clusterName is the Envoy cluster Istio builds for meshwaf's gRPC port,
// which the EnvoyFilter's grpc_service names.
func (o Options) clusterName() string {
	return fmt.Sprintf("outbound|%d||%s", o.GRPCPort, o.serviceHost())
}

// localProviderName is the extension provider of pod mode.
func (o Options) localProviderName() string { return o.ProviderName + "-local" }

func (o Options) optIn() map[string]string {
	return map[string]string{o.OptInLabel: o.OptInValue}
}

// selectorLabels select meshwaf's own pods.
func (o Options) selectorLabels() map[string]string {
	return map[string]string{NameLabel: o.ServiceName}
}

// labels go on every object meshwaf renders.
func (o Options) labels() map[string]string {
	return map[string]string{NameLabel: o.ServiceName, kubeyaml.ManagedByLabel: kubeyaml.ManagedBy}
}
