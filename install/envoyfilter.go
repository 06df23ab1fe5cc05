package install

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	networkingv1alpha3api "istio.io/api/networking/v1alpha3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Envoy names the EnvoyFilters use.
const (
	extAuthzFilterName = "envoy.filters.http.ext_authz"
	routerFilterName   = "envoy.filters.http.router"
	hcmFilterName      = "envoy.filters.network.http_connection_manager"
)

// envoyStatus reports whether Envoy's HttpStatus enum has code.
func envoyStatus(code int) bool {
	_, ok := typev3.StatusCode_name[int32(code)]
	return ok
}

// extAuthzConfig is the ext_authz HTTP filter config of the envoyfilter
// mode: gRPC v3 to meshwaf's cluster with the body, failure and timeout
// settings of o. It is validated by Envoy's own proto constraints; a
// rejection is an *OptionsError.
func extAuthzConfig(o Options) (*extauthzv3.ExtAuthz, error) {
	cfg := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: o.clusterName(),
				Authority:   o.serviceHost(),
			}},
			Timeout: durationpb.New(o.Timeout),
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    o.FailOpen,
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode(o.StatusOnError)},
		WithRequestBody: &extauthzv3.BufferSettings{
			MaxRequestBytes:     o.MaxRequestBytes,
			AllowPartialMessage: o.AllowPartialMessage,
			PackAsBytes:         o.PackAsBytes,
		},
	}
	if err := cfg.ValidateAll(); err != nil {
		// Options that Envoy's constraints reject are the caller's input.
		return nil, &OptionsError{Problems: []error{fmt.Errorf("ext_authz config: %w", err)}}
	}
	return cfg, nil
}

// typedStruct renders m as the Struct an EnvoyFilter patch carries:
// {"@type": ..., fields with proto names}.
func typedStruct(m proto.Message) (*structpb.Struct, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, err
	}
	return s, nil
}

// envoyFilter inserts meshwaf's ext_authz filter before the router on the
// inbound listeners of every workload carrying the opt-in label, mesh-wide
// (it lives in the root namespace). The sidecar must see meshwaf's Service
// (a Sidecar resource's egress hosts must include it) for the cluster to
// exist.
func envoyFilter(o Options) (*networkingv1alpha3.EnvoyFilter, error) {
	cfg, err := extAuthzConfig(o)
	if err != nil {
		return nil, err
	}
	typed, err := typedStruct(cfg)
	if err != nil {
		return nil, err
	}
	// Written out so the YAML says how failures and long bodies are treated.
	typed.Fields["failure_mode_allow"] = structpb.NewBoolValue(o.FailOpen)
	body := typed.Fields["with_request_body"].GetStructValue()
	body.Fields["allow_partial_message"] = structpb.NewBoolValue(o.AllowPartialMessage)
	body.Fields["pack_as_bytes"] = structpb.NewBoolValue(o.PackAsBytes)
	return &networkingv1alpha3.EnvoyFilter{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: metav1.ObjectMeta{
			Name: o.ServiceName + "-ext-authz", Namespace: o.RootNamespace, Labels: o.labels(),
			Annotations: map[string]string{NoteAnnotation: fmt.Sprintf(
				"inserts %s before %s on SIDECAR_INBOUND of workloads labelled %s=%s; per-route profiles: "+
					"check_settings.context_extensions[%s] in an ExtAuthzPerRoute (see the profile-route example)",
				extAuthzFilterName, routerFilterName, o.OptInLabel, o.OptInValue, ProfileContextKey)},
		},
		Spec: networkingv1alpha3api.EnvoyFilter{
			WorkloadSelector: &networkingv1alpha3api.WorkloadSelector{Labels: o.optIn()},
			ConfigPatches: []*networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectPatch{{
				ApplyTo: networkingv1alpha3api.EnvoyFilter_HTTP_FILTER,
				Match: &networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectMatch{
					Context: networkingv1alpha3api.EnvoyFilter_SIDECAR_INBOUND,
					ObjectTypes: &networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectMatch_Listener{
						Listener: &networkingv1alpha3api.EnvoyFilter_ListenerMatch{
							FilterChain: &networkingv1alpha3api.EnvoyFilter_ListenerMatch_FilterChainMatch{
								Filter: &networkingv1alpha3api.EnvoyFilter_ListenerMatch_FilterMatch{
									Name:      hcmFilterName,
									SubFilter: &networkingv1alpha3api.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: routerFilterName},
								},
							},
						},
					},
				},
				Patch: &networkingv1alpha3api.EnvoyFilter_Patch{
					Operation: networkingv1alpha3api.EnvoyFilter_Patch_INSERT_BEFORE,
					Value: &structpb.Struct{Fields: map[string]*structpb.Value{
						"name":         structpb.NewStringValue(extAuthzFilterName),
						"typed_config": structpb.NewStructValue(typed),
					}},
				},
			}},
		},
	}, nil
}

// profileRoute picks a meshwaf profile for the inbound routes of one
// workload port.
type profileRoute struct {
	// Name and Namespace of the EnvoyFilter; it applies to workloads of
	// that namespace matching Selector.
	Name, Namespace string
	Selector        map[string]string
	// Port is the workload's inbound (container) port.
	Port uint32
	// Profile is the meshwaf profile name sent as context_extensions.
	Profile string
}

// exampleProfileRoute is the documented example rendered into manifests/.
func exampleProfileRoute() profileRoute {
	return profileRoute{Name: "payments-meshwaf-profile", Namespace: "payments",
		Selector: map[string]string{"app": "payments"}, Port: 8080, Profile: "strict"}
}

// profileRouteFilter sets check_settings.context_extensions
// {meshwaf-profile: r.Profile} on the inbound routes of r.Port, so meshwaf
// inspects those requests with that profile. It works with the ext_authz
// filter of either the envoyfilter or the mesh mode: both are named
// envoy.filters.http.ext_authz.
func profileRouteFilter(o Options, r profileRoute) (*networkingv1alpha3.EnvoyFilter, error) {
	per := &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
		CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: map[string]string{ProfileContextKey: r.Profile}},
	}}
	if err := per.ValidateAll(); err != nil {
		return nil, fmt.Errorf("ext_authz per-route config: %w", err)
	}
	typed, err := typedStruct(per)
	if err != nil {
		return nil, err
	}
	return &networkingv1alpha3.EnvoyFilter{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: metav1.ObjectMeta{
			Name: r.Name, Namespace: r.Namespace, Labels: o.labels(),
			Annotations: map[string]string{NoteAnnotation: fmt.Sprintf(
				"meshwaf inspects requests to port %d of these workloads with profile %q", r.Port, r.Profile)},
		},
		Spec: networkingv1alpha3api.EnvoyFilter{
			WorkloadSelector: &networkingv1alpha3api.WorkloadSelector{Labels: r.Selector},
			ConfigPatches: []*networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectPatch{{
				ApplyTo: networkingv1alpha3api.EnvoyFilter_HTTP_ROUTE,
				Match: &networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectMatch{
					Context: networkingv1alpha3api.EnvoyFilter_SIDECAR_INBOUND,
					ObjectTypes: &networkingv1alpha3api.EnvoyFilter_EnvoyConfigObjectMatch_RouteConfiguration{
						RouteConfiguration: &networkingv1alpha3api.EnvoyFilter_RouteConfigurationMatch{PortNumber: r.Port},
					},
				},
				Patch: &networkingv1alpha3api.EnvoyFilter_Patch{
					Operation: networkingv1alpha3api.EnvoyFilter_Patch_MERGE,
					Value: &structpb.Struct{Fields: map[string]*structpb.Value{
						"typed_per_filter_config": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
							extAuthzFilterName: structpb.NewStructValue(typed),
						}}),
					}},
				},
			}},
		},
	}, nil
}
