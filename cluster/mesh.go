package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// istioDefaultTimeout is the provider timeout Istio uses when none is set.
const istioDefaultTimeout = 600 * time.Second

// ParseMeshConfig reads the mesh config of Istio's ConfigMap (YAML, as
// istiod reads it). Fields this Istio API version does not know are
// ignored.
func ParseMeshConfig(data string) (*meshv1alpha1.MeshConfig, error) {
	raw, err := yaml.YAMLToJSON([]byte(data))
	if err != nil {
		return nil, err
	}
	mc := &meshv1alpha1.MeshConfig{}
	if string(raw) == "null" {
		return mc, nil
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, mc); err != nil {
		return nil, err
	}
	return mc, nil
}

// meshState is what the mesh config checks found, for the other checks.
type meshState struct {
	mc *meshv1alpha1.MeshConfig // nil when unreadable
	// providers are the names of the extension providers.
	providers []string
}

// rootNamespace is Istio's config root namespace.
func (m meshState) rootNamespace() string {
	if ns := m.mc.GetRootNamespace(); ns != "" {
		return ns
	}
	return DefaultRootNamespace
}

func (m meshState) has(provider string) bool { return slices.Contains(m.providers, provider) }

// readMesh parses the mesh config ConfigMap, or returns MW0001.
func readMesh(s *Snapshot, t Target) (meshState, []Finding) {
	obj := Object{Kind: "ConfigMap", Namespace: t.IstioNamespace, Name: t.MeshConfigMap}
	if s.MeshConfig == nil {
		return meshState{}, []Finding{newFinding(CodeMeshConfigMissing, obj,
			"install Istio, or name the ConfigMap of your revision with --mesh-config-map istio-REVISION",
			"no ConfigMap %s: Istio's mesh config, and so meshwaf's extension provider, cannot be checked", obj)}
	}
	data, ok := s.MeshConfig.Data[MeshConfigKey]
	if !ok {
		return meshState{}, []Finding{newFinding(CodeMeshConfigMissing, obj,
			"reinstall Istio (istioctl install -f) so that istiod's mesh config is written",
			"%s has no key %q", obj, MeshConfigKey)}
	}
	mc, err := ParseMeshConfig(data)
	if err != nil {
		return meshState{}, []Finding{newFinding(CodeMeshConfigMissing, obj,
			"fix the mesh config (istioctl install -f with a valid meshConfig)",
			"key %q is not a mesh config: %v", MeshConfigKey, err)}
	}
	m := meshState{mc: mc}
	for _, p := range mc.GetExtensionProviders() {
		m.providers = append(m.providers, p.GetName())
	}
	return m, nil
}

// checkProviders checks meshwaf's extension providers: the mesh mode's
// against meshwaf's Service and config, the pod mode's for its failure
// and body settings. A provider that is missing is an error when a CUSTOM
// policy names it, or when nothing else wires meshwaf in (central says so).
func checkProviders(s *Snapshot, t Target, m meshState, central bool, cfg *MeshwafConfig) []Finding {
	obj := Object{Kind: "ConfigMap", Namespace: t.IstioNamespace, Name: t.MeshConfigMap}
	var out []Finding
	for _, name := range []string{t.ProviderName, t.LocalProviderName()} {
		mesh := name == t.ProviderName
		var found bool
		for _, p := range m.mc.GetExtensionProviders() {
			if p.GetName() != name {
				continue
			}
			found = true
			grpc := p.GetEnvoyExtAuthzGrpc()
			if grpc == nil {
				out = append(out, newFinding(CodeProviderNotGRPC, obj,
					"make the provider an envoyExtAuthzGrpc entry: meshwaf manifests --mode mesh --part istio-operator",
					"extension provider %q is not of type envoyExtAuthzGrpc: meshwaf serves only ext_authz gRPC v3", name))
				continue
			}
			if mesh {
				out = append(out, checkProviderTarget(s, t, obj, name, grpc.GetService(), grpc.GetPort())...)
			}
			out = append(out, checkProviderSettings(t, obj, name, grpc, cfg, mesh)...)
		}
		if found {
			continue
		}
		users := customPoliciesNaming(s, name)
		if len(users) > 0 || (mesh && central) {
			msg := fmt.Sprintf("the mesh config has no extension provider %q", name)
			if len(users) > 0 {
				msg += fmt.Sprintf("; CUSTOM policies %s name it, so their workloads' requests do not reach meshwaf", strings.Join(users, ", "))
			}
			out = append(out, newFinding(CodeProviderMissing, obj,
				"add the provider: istioctl install -f <(meshwaf manifests --mode mesh --part istio-operator), listing your other extensionProviders too",
				"%s", msg))
		}
	}
	return out
}

// checkProviderTarget checks that service and port name meshwaf's
// Service and its gRPC port.
func checkProviderTarget(s *Snapshot, t Target, obj Object, name, service string, port uint32) []Finding {
	host := service
	if _, h, ok := strings.Cut(service, "/"); ok { // Istio's [NAMESPACE/]HOST
		host = h
	}
	svcObj := Object{Kind: "Service", Namespace: t.Namespace, Name: t.ServiceName}
	switch {
	case host != t.ServiceHost():
		return []Finding{newFinding(CodeProviderService, obj,
			fmt.Sprintf("set the provider's service to %s (or pass doctor --namespace/--service-name for your install)", t.ServiceHost()),
			"provider %q points at %q, not at meshwaf's Service %s", name, service, t.ServiceHost())}
	case s.Service == nil:
		return []Finding{newFinding(CodeProviderService, svcObj,
			"install meshwaf's central service: meshwaf manifests --mode mesh | kubectl apply -f -",
			"provider %q points at %s, which does not exist", name, t.ServiceHost())}
	}
	var ports []string
	for _, p := range s.Service.Spec.Ports {
		if uint32(p.Port) == port {
			return nil
		}
		ports = append(ports, fmt.Sprint(p.Port))
	}
	return []Finding{newFinding(CodeProviderPort, obj,
		fmt.Sprintf("set the provider's port to meshwaf's gRPC port (%d by default)", t.GRPCPort),
		"provider %q uses port %d, which %s does not expose (ports %s)", name, port, svcObj, strings.Join(ports, ", "))}
}

// checkProviderSettings checks the timeout, the failure mode and the body
// settings of a provider; cfg, when read, is meshwaf's config (compared
// for the mesh provider only: the pod mode's config is per pod).
func checkProviderSettings(t Target, obj Object, name string,
	grpc *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider, cfg *MeshwafConfig, mesh bool) []Finding {
	var out []Finding
	const timeoutFix = "set the provider's timeout (meshwaf manifests --timeout; 500ms by default)"
	switch tm := grpc.GetTimeout(); {
	case tm == nil:
		out = append(out, newFinding(CodeProviderTimeout, obj, timeoutFix,
			"provider %q sets no timeout: Istio's default is %s, so requests hang that long when meshwaf does", name, istioDefaultTimeout))
	case tm.AsDuration() < t.MinTimeout:
		out = append(out, newFinding(CodeProviderTimeout, obj, timeoutFix,
			"provider %q times out after %s, below %s: checks of large bodies will time out and get statusOnError", name, tm.AsDuration(), t.MinTimeout))
	case tm.AsDuration() > t.MaxTimeout:
		out = append(out, newFinding(CodeProviderTimeout, obj, timeoutFix,
			"provider %q times out after %s, above %s: requests hang that long when meshwaf does", name, tm.AsDuration(), t.MaxTimeout))
	case mesh && cfg != nil && cfg.QueueWait > 0 && tm.AsDuration() <= cfg.QueueWait:
		out = append(out, newFinding(CodeProviderTimeout, obj, timeoutFix+", or lower meshwaf's queueWait",
			"provider %q times out after %s, within meshwaf's queueWait %s: a queued check is abandoned by Envoy before meshwaf answers it", name, tm.AsDuration(), cfg.QueueWait))
	}
	if grpc.GetFailOpen() {
		out = append(out, newFinding(CodeProviderFailOpen, obj,
			"set failOpen: false unless availability must win over inspection (meshwaf manifests without --fail-open)",
			"provider %q fails open: when meshwaf cannot answer, requests pass uninspected", name))
	}
	body := grpc.GetIncludeRequestBodyInCheck()
	if body == nil {
		return append(out, newFinding(CodeProviderNoBody, obj,
			"set includeRequestBodyInCheck (meshwaf manifests --max-request-bytes)",
			"provider %q sends no request bodies: meshwaf inspects headers and the URL only", name))
	}
	if mesh && cfg != nil && body.GetMaxRequestBytes() > 0 && int64(body.GetMaxRequestBytes()) > int64(cfg.RequestBodyLimit) {
		out = append(out, newFinding(CodeProviderBodyOverLimit, obj,
			"lower includeRequestBodyInCheck.maxRequestBytes, or raise defaultProfile.requestBodyLimit in meshwaf's ConfigMap",
			"provider %q sends bodies up to %d bytes, above meshwaf's requestBodyLimit %d: meshwaf inspects only the first %d",
			name, body.GetMaxRequestBytes(), cfg.RequestBodyLimit, cfg.RequestBodyLimit))
	}
	if body.GetAllowPartialMessage() {
		switch {
		case !mesh || cfg == nil:
			// Without meshwaf's profile setting the outcome is unknown.
		case cfg.AllowPartialBody:
			out = append(out, newFinding(CodeProviderPartialPasses, obj,
				"set allowPartialMessage: false (Envoy answers 413), or allowPartialBody: false in meshwaf's profile",
				"provider %q cuts bodies over %d bytes and meshwaf's default profile allows partial bodies: the rest passes uninspected",
				name, body.GetMaxRequestBytes()))
		default:
			out = append(out, newFinding(CodeProviderPartialDenied, obj, "",
				"provider %q cuts bodies over %d bytes; meshwaf denies such requests (allowPartialBody is off)",
				name, body.GetMaxRequestBytes()))
		}
	}
	return out
}
