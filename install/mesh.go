package install

import (
	"encoding/json"
	"strconv"

	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// oneCustomProviderNote is the rule the CUSTOM policies carry as an
// annotation: Istio rejects a second CUSTOM provider on one workload.
const oneCustomProviderNote = "Istio allows one CUSTOM provider per workload: a workload selected here must not be " +
	"selected by a CUSTOM policy naming another provider (use the envoyfilter mode for those). " +
	"CUSTOM policies cannot be dry-run (istio.io/dry-run is for ALLOW and DENY)."

// istioOperator is the part of istioctl's IstioOperator that meshwaf
// sets: spec.meshConfig, merged by `istioctl install -f` into the
// installed profile.
type istioOperator struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              istioOperatorSpec `json:"spec"`
}

// istioOperatorSpec holds the MeshConfig overlay.
type istioOperatorSpec struct {
	MeshConfig *meshv1alpha1.MeshConfig `json:"meshConfig"`
}

// MarshalJSON writes meshConfig the way Istio reads it (protobuf JSON,
// camelCase) and spells out the gRPC providers' failOpen and
// allowPartialMessage even when false, so the file says how failures and
// long bodies are treated.
func (s istioOperatorSpec) MarshalJSON() ([]byte, error) {
	raw, err := s.MeshConfig.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var mc map[string]any
	if err := json.Unmarshal(raw, &mc); err != nil {
		return nil, err
	}
	providers, _ := mc["extensionProviders"].([]any)
	for i, p := range providers {
		grpc, ok := p.(map[string]any)["envoyExtAuthzGrpc"].(map[string]any)
		if !ok {
			continue
		}
		grpc["failOpen"] = s.MeshConfig.ExtensionProviders[i].GetEnvoyExtAuthzGrpc().GetFailOpen()
		if body, ok := grpc["includeRequestBodyInCheck"].(map[string]any); ok {
			body["allowPartialMessage"] = s.MeshConfig.ExtensionProviders[i].GetEnvoyExtAuthzGrpc().GetIncludeRequestBodyInCheck().GetAllowPartialMessage()
		}
	}
	return json.Marshal(map[string]any{"meshConfig": mc})
}

// extensionProvider is the MeshConfig extensionProviders entry that points
// Istio's CUSTOM action at meshwaf over ext_authz gRPC v3: at the central
// Service (mesh mode) or at LocalHost (pod mode).
func extensionProvider(o Options, mode Mode) *meshv1alpha1.MeshConfig_ExtensionProvider {
	name, service := o.ProviderName, o.serviceHost()
	if mode == ModePod {
		name, service = o.localProviderName(), o.LocalHost
	}
	return &meshv1alpha1.MeshConfig_ExtensionProvider{
		Name: name,
		Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc{
			EnvoyExtAuthzGrpc: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider{
				Service:       service,
				Port:          uint32(o.GRPCPort),
				Timeout:       durationpb.New(o.Timeout),
				FailOpen:      o.FailOpen,
				StatusOnError: strconv.Itoa(o.StatusOnError),
				IncludeRequestBodyInCheck: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody{
					MaxRequestBytes:     o.MaxRequestBytes,
					AllowPartialMessage: o.AllowPartialMessage,
					PackAsBytes:         o.PackAsBytes,
				},
			},
		},
	}
}

// newIstioOperator is the overlay for `istioctl install -f` that adds
// meshwaf's extension provider. istioctl replaces lists rather than
// merging them: a mesh that already has extensionProviders must list
// them here too.
func newIstioOperator(o Options, mode Mode) *istioOperator {
	return &istioOperator{
		TypeMeta:   metav1.TypeMeta{APIVersion: "install.istio.io/v1alpha1", Kind: "IstioOperator"},
		ObjectMeta: metav1.ObjectMeta{Name: o.ServiceName, Namespace: o.RootNamespace},
		Spec: istioOperatorSpec{MeshConfig: &meshv1alpha1.MeshConfig{
			ExtensionProviders: []*meshv1alpha1.MeshConfig_ExtensionProvider{extensionProvider(o, mode)},
		}},
	}
}

// customPolicy is the CUSTOM AuthorizationPolicy in the root namespace
// that sends every request of the opted-in workloads, except those to
// ExcludePaths, to meshwaf's provider (mesh mode) or to the pod-local one
// (pod mode).
func customPolicy(o Options, mode Mode) *securityv1.AuthorizationPolicy {
	provider, name := o.ProviderName, o.ServiceName+"-inspect"
	if mode == ModePod {
		provider, name = o.localProviderName(), o.ServiceName+"-inspect-local"
	}
	rule := &securityv1beta1.Rule{}
	if len(o.ExcludePaths) > 0 {
		rule.To = []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{NotPaths: o.ExcludePaths}}}
	}
	return &securityv1.AuthorizationPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: o.RootNamespace, Labels: o.labels(),
			Annotations: map[string]string{NoteAnnotation: oneCustomProviderNote},
		},
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: o.optIn()},
			Action:   securityv1beta1.AuthorizationPolicy_CUSTOM,
			ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{
				Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: provider},
			},
			Rules: []*securityv1beta1.Rule{rule},
		},
	}
}
