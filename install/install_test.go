package install

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/internal/golden"
)

// docs splits multi-document YAML.
func docs(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// kinds lists the kind of each document.
func kinds(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for _, d := range docs(t, b) {
		var m struct{ Kind string }
		require.NoError(t, yaml.Unmarshal(d, &m))
		out = append(out, m.Kind)
	}
	return out
}

func render(t *testing.T, o Options, mode Mode, part Part) []byte {
	t.Helper()
	out, err := Render(o, mode, part)
	require.NoError(t, err)
	return out
}

// customOptions changes every option from its default.
func customOptions() Options {
	o := DefaultOptions()
	o.Namespace, o.RootNamespace, o.ServiceName, o.ProviderName = "waf", "istio-config", "crs", "crs-waf"
	o.ClusterDomain, o.Image, o.Replicas, o.MaxReplicas = "mesh.example", "example/meshwaf:v9", 3, 5
	o.GRPCPort, o.MetricsPort, o.Timeout, o.FailOpen, o.StatusOnError = 9100, 9190, 250*time.Millisecond, true, 503
	o.MaxRequestBytes, o.AllowPartialMessage, o.PackAsBytes, o.RequestBodyLimit = 65536, true, false, 131072
	o.OptInLabel, o.OptInValue, o.ExcludePaths = "example.com/waf", "on", []string{"/ping", "/status/*"}
	o.ScraperNamespaces, o.LocalHost = nil, "waf.local"
	o.WaypointName, o.WaypointNamespaces = "shop-waypoint", []string{"shop", "billing"}
	o.WaypointServices = []ServiceRef{{"payments", "ledger"}, {"payments", "api"}}
	return o
}

// notAPart are the mode and part combinations Objects refuses, with the
// error it gives; every other combination must render.
var notAPart = map[Mode]map[Part]string{
	ModeEnvoyFilter: {PartIstioOperator: "the envoyfilter mode needs no extension provider", PartPodPatch: "only the pod mode has one"},
	ModeMesh:        {PartPodPatch: "only the pod mode has one"},
	ModeWaypoint:    {PartPodPatch: "only the pod mode has one", PartProfileRoute: "EnvoyFilter is unsupported on waypoints"},
}

func TestInstallGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{{"default", DefaultOptions()}, {"custom", customOptions()}} {
		for _, mode := range Modes() {
			for _, part := range Parts() {
				t.Run(tc.name+"/"+string(mode)+"/"+string(part), func(t *testing.T) {
					if want, ok := notAPart[mode][part]; ok {
						_, err := objects(tc.o, mode, part)
						require.ErrorContains(t, err, want)
						return
					}
					got := render(t, tc.o, mode, part)
					if part == PartIstioOperator && mode == ModeWaypoint {
						// The mesh mode's extension provider: its golden file.
						require.Equal(t, string(render(t, tc.o, ModeMesh, part)), string(got))
						return
					}
					if part == PartProfileRoute && mode != ModeEnvoyFilter {
						// The same in every mode: one golden file.
						require.Equal(t, string(render(t, tc.o, ModeEnvoyFilter, part)), string(got))
						return
					}
					golden.Check(t, filepath.Join("testdata", "golden", tc.name+"-"+string(mode)+"-"+string(part)+".yaml"), got)
				})
			}
		}
	}
}

func TestObjectsParts(t *testing.T) {
	o := DefaultOptions()
	base := []string{"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
		"PodDisruptionBudget", "HorizontalPodAutoscaler", "PeerAuthentication", "AuthorizationPolicy"}
	tests := []struct {
		mode    Mode
		part    Part
		want    []string
		wantErr string
	}{
		{ModeMesh, PartObjects, append(append([]string{}, base...), "AuthorizationPolicy"), ""},
		{ModeEnvoyFilter, PartObjects, append(append([]string{}, base...), "EnvoyFilter"), ""},
		{ModePod, PartObjects, []string{"ServiceEntry", "AuthorizationPolicy"}, ""},
		{ModeMesh, PartIstioOperator, []string{"IstioOperator"}, ""},
		{ModePod, PartIstioOperator, []string{"IstioOperator"}, ""},
		{ModePod, PartPodPatch, []string{"ConfigMap", "Deployment"}, ""},
		{ModeEnvoyFilter, PartProfileRoute, []string{"EnvoyFilter"}, ""},
		{ModeEnvoyFilter, PartIstioOperator, nil, "needs no extension provider"},
		{ModeMesh, PartPodPatch, nil, "only the pod mode"},
		{ModeWaypoint, PartObjects, append(append([]string{}, base...), "AuthorizationPolicy"), ""},
		{ModeWaypoint, PartIstioOperator, []string{"IstioOperator"}, ""},
		{ModeWaypoint, PartPodPatch, nil, "only the pod mode"},
		{ModeWaypoint, PartProfileRoute, nil, "EnvoyFilter is unsupported on waypoints"},
		{"sidecar", PartObjects, nil, `mode "sidecar"`},
		{ModeMesh, "all", nil, `part "all"`},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode)+"/"+string(tt.part), func(t *testing.T) {
			objs, err := objects(o, tt.mode, tt.part)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorAs(t, err, new(*OptionsError), "the caller's input")
				return
			}
			require.NoError(t, err)
			out, err := marshal(objs...)
			require.NoError(t, err)
			require.Equal(t, tt.want, kinds(t, out))
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, DefaultOptions().validate())
	require.NoError(t, customOptions().validate())
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"body over meshwaf's limit", func(o *Options) { o.MaxRequestBytes = 2 << 20 }, "above meshwaf's requestBodyLimit 1048576"},
		{"no body", func(o *Options) { o.MaxRequestBytes = 0 }, "max request bytes: must be positive"},
		{"one replica", func(o *Options) { o.Replicas, o.MaxReplicas = 1, 1 }, "replicas 1: want at least 2"},
		{"max below min", func(o *Options) { o.MaxReplicas = 1 }, "max replicas 1: below replicas 2"},
		{"no timeout", func(o *Options) { o.Timeout = 0 }, "Istio's default would be 600s"},
		{"sub-ms timeout", func(o *Options) { o.Timeout = 1500 * time.Microsecond }, "whole milliseconds"},
		{"status 200", func(o *Options) { o.StatusOnError = 200 }, "want an HTTP 4xx or 5xx"},
		{"status unknown to Envoy", func(o *Options) { o.StatusOnError = 499 }, "Envoy's HttpStatus has no such code"},
		{"same ports", func(o *Options) { o.MetricsPort = o.GRPCPort }, "both 9000"},
		{"port range", func(o *Options) { o.GRPCPort = 70000 }, "grpc port 70000: not in 1-65535"},
		{"namespace", func(o *Options) { o.Namespace = "Meshwaf_System" }, `namespace "Meshwaf_System"`},
		{"label", func(o *Options) { o.OptInLabel = "bad label" }, `opt-in label "bad label"`},
		{"empty value", func(o *Options) { o.OptInValue = "" }, "opt-in value: must not be empty"},
		{"relative path", func(o *Options) { o.ExcludePaths = []string{"healthz"} }, `exclude path "healthz"`},
		{"image", func(o *Options) { o.Image = "" }, "image"},
		{"body limit", func(o *Options) { o.RequestBodyLimit = 128 << 20 }, "request body limit 134217728"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.edit(&o)
			err := o.validate()
			require.ErrorContains(t, err, tt.want)
			require.ErrorAs(t, err, new(*OptionsError))
			_, err = Render(o, ModeMesh, PartObjects)
			require.ErrorContains(t, err, tt.want, "rendering validates too")
			require.ErrorAs(t, err, new(*OptionsError))
			_, err = KustomizeTree(o)
			require.ErrorContains(t, err, tt.want, "so does the kustomize tree")
		})
	}
	o := DefaultOptions()
	o.Replicas, o.StatusOnError = 0, 1
	err := o.validate()
	require.ErrorContains(t, err, "replicas 0")
	require.ErrorContains(t, err, "status on error 1", "every problem at once")
}

// The EnvoyFilter's typed_config decodes, strictly, as Envoy's ExtAuthz
// with the options' settings.
func TestEnvoyFilterDecodesAsExtAuthz(t *testing.T) {
	for _, o := range []Options{DefaultOptions(), customOptions()} {
		out := render(t, o, ModeEnvoyFilter, PartObjects)
		d := docs(t, out)
		var ef networkingv1alpha3.EnvoyFilter
		require.NoError(t, yaml.UnmarshalStrict(d[len(d)-1], &ef))
		require.Equal(t, map[string]string{o.OptInLabel: o.OptInValue}, ef.Spec.WorkloadSelector.GetLabels())
		require.Len(t, ef.Spec.ConfigPatches, 1)
		p := ef.Spec.ConfigPatches[0]
		require.Equal(t, "SIDECAR_INBOUND", p.GetMatch().GetContext().String())
		require.Equal(t, "INSERT_BEFORE", p.GetPatch().GetOperation().String())
		require.Equal(t, routerFilterName, p.GetMatch().GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName())
		v := p.GetPatch().GetValue().GetFields()
		require.Equal(t, extAuthzFilterName, v["name"].GetStringValue())
		typed := v["typed_config"].GetStructValue()
		require.Equal(t, "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", typed.GetFields()["@type"].GetStringValue())
		delete(typed.Fields, "@type")
		raw, err := protojson.Marshal(typed)
		require.NoError(t, err)
		cfg := &extauthzv3.ExtAuthz{}
		require.NoError(t, protojson.Unmarshal(raw, cfg), "strict: unknown fields fail: %s", raw)
		require.Equal(t, o.clusterName(), cfg.GetGrpcService().GetEnvoyGrpc().GetClusterName())
		require.Equal(t, "outbound|"+strconv.Itoa(int(o.GRPCPort))+"||"+o.ServiceName+"."+o.Namespace+".svc."+o.ClusterDomain, o.clusterName())
		require.Equal(t, o.Timeout, cfg.GetGrpcService().GetTimeout().AsDuration())
		require.Equal(t, "V3", cfg.GetTransportApiVersion().String())
		require.Equal(t, o.FailOpen, cfg.GetFailureModeAllow())
		require.Equal(t, int32(o.StatusOnError), int32(cfg.GetStatusOnError().GetCode()))
		require.Equal(t, o.MaxRequestBytes, cfg.GetWithRequestBody().GetMaxRequestBytes())
		require.Equal(t, o.AllowPartialMessage, cfg.GetWithRequestBody().GetAllowPartialMessage())
		require.Equal(t, o.PackAsBytes, cfg.GetWithRequestBody().GetPackAsBytes())
		want, err := extAuthzConfig(o)
		require.NoError(t, err)
		require.True(t, proto.Equal(want, cfg))
	}
}

// The per-route example decodes as ExtAuthzPerRoute carrying the profile.
func TestProfileRouteFilter(t *testing.T) {
	r := exampleProfileRoute()
	out := render(t, DefaultOptions(), ModeEnvoyFilter, PartProfileRoute)
	var ef networkingv1alpha3.EnvoyFilter
	require.NoError(t, yaml.UnmarshalStrict(out, &ef))
	p := ef.Spec.ConfigPatches[0]
	require.Equal(t, "HTTP_ROUTE", p.GetApplyTo().String())
	require.Equal(t, r.Port, p.GetMatch().GetRouteConfiguration().GetPortNumber())
	typed := p.GetPatch().GetValue().GetFields()["typed_per_filter_config"].GetStructValue().GetFields()[extAuthzFilterName].GetStructValue()
	require.Equal(t, "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", typed.GetFields()["@type"].GetStringValue())
	delete(typed.Fields, "@type")
	raw, err := protojson.Marshal(typed)
	require.NoError(t, err)
	per := &extauthzv3.ExtAuthzPerRoute{}
	require.NoError(t, protojson.Unmarshal(raw, per))
	require.Equal(t, map[string]string{ProfileContextKey: r.Profile}, per.GetCheckSettings().GetContextExtensions())

	r.Profile = ""
	r.Port = 0
	_, err = profileRouteFilter(DefaultOptions(), r)
	require.NoError(t, err, "an empty profile name is Envoy-valid; meshwaf falls back to the default profile")
}

// The IstioOperator's meshConfig decodes, strictly, as Istio's MeshConfig.
func TestIstioOperatorMeshConfig(t *testing.T) {
	for _, mode := range []Mode{ModeMesh, ModePod} {
		for _, o := range []Options{DefaultOptions(), customOptions()} {
			out := render(t, o, mode, PartIstioOperator)
			var iop struct {
				APIVersion string `json:"apiVersion"`
				Kind       string
				Spec       struct {
					MeshConfig map[string]any `json:"meshConfig"`
				}
			}
			require.NoError(t, yaml.Unmarshal(out, &iop))
			require.Equal(t, "install.istio.io/v1alpha1", iop.APIVersion)
			raw, err := yaml.Marshal(iop.Spec.MeshConfig)
			require.NoError(t, err)
			js, err := yaml.YAMLToJSON(raw)
			require.NoError(t, err)
			mc := &meshv1alpha1.MeshConfig{}
			require.NoError(t, protojson.Unmarshal(js, mc), "strict: unknown fields fail")
			require.Len(t, mc.ExtensionProviders, 1)
			p := mc.ExtensionProviders[0]
			g := p.GetEnvoyExtAuthzGrpc()
			if mode == ModeMesh {
				require.Equal(t, o.ProviderName, p.Name)
				require.Equal(t, o.serviceHost(), g.Service)
			} else {
				require.Equal(t, o.ProviderName+"-local", p.Name)
				require.Equal(t, o.LocalHost, g.Service)
			}
			require.Equal(t, uint32(o.GRPCPort), g.Port)
			require.Equal(t, o.Timeout, g.Timeout.AsDuration(), "Istio's default is 600s: always set")
			require.Equal(t, o.FailOpen, g.FailOpen)
			require.Equal(t, strconv.Itoa(o.StatusOnError), g.StatusOnError)
			require.Equal(t, o.MaxRequestBytes, g.IncludeRequestBodyInCheck.MaxRequestBytes)
			require.LessOrEqual(t, int(g.IncludeRequestBodyInCheck.MaxRequestBytes), o.RequestBodyLimit)
			require.Equal(t, o.AllowPartialMessage, g.IncludeRequestBodyInCheck.AllowPartialMessage)
			require.Equal(t, o.PackAsBytes, g.IncludeRequestBodyInCheck.PackAsBytes)
			require.Contains(t, string(out), "failOpen: "+boolString(o.FailOpen), "spelled out even when false")
		}
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// The CUSTOM policy selects the opt-in label mesh-wide, names the right
// provider, skips the health checks and carries the one-provider note.
func TestCustomPolicy(t *testing.T) {
	o := customOptions()
	for _, mode := range []Mode{ModeMesh, ModePod} {
		objs, err := objects(o, mode, PartObjects)
		require.NoError(t, err)
		out, err := marshal(objs[len(objs)-1])
		require.NoError(t, err)
		var ap securityv1.AuthorizationPolicy
		require.NoError(t, yaml.UnmarshalStrict(out, &ap))
		require.Equal(t, o.RootNamespace, ap.Namespace, "root namespace: applies to every namespace")
		require.Equal(t, securityv1beta1.AuthorizationPolicy_CUSTOM, ap.Spec.Action)
		require.Equal(t, map[string]string{"example.com/waf": "on"}, ap.Spec.GetSelector().GetMatchLabels())
		require.Equal(t, []string{"/ping", "/status/*"}, ap.Spec.Rules[0].To[0].Operation.NotPaths)
		require.Contains(t, ap.Annotations[NoteAnnotation], "one CUSTOM provider per workload")
		require.NotContains(t, ap.Annotations, "istio.io/dry-run", "CUSTOM cannot be dry-run")
		want := o.ProviderName
		if mode == ModePod {
			want += "-local"
		}
		require.Equal(t, want, ap.Spec.GetProvider().GetName())
	}
	o.ExcludePaths = nil
	ap := customPolicy(o, ModeMesh)
	require.Len(t, ap.Spec.Rules, 1, "one empty rule: every request is checked")
	require.Empty(t, ap.Spec.Rules[0].To)
}

// meshwaf's Deployment runs hardened, drains within its grace period and
// mounts the ConfigMap it is configured from.
func TestDeploymentHardening(t *testing.T) {
	o := DefaultOptions()
	objs, err := baseObjects(o)
	require.NoError(t, err)
	out, err := marshal(objs...)
	require.NoError(t, err)
	var dep appsv1.Deployment
	var cm corev1.ConfigMap
	var svc corev1.Service
	var ns corev1.Namespace
	var hpa autoscalingv2.HorizontalPodAutoscaler
	for _, d := range docs(t, out) {
		switch k := kinds(t, d)[0]; k {
		case "Deployment":
			require.NoError(t, yaml.UnmarshalStrict(d, &dep))
		case "ConfigMap":
			require.NoError(t, yaml.UnmarshalStrict(d, &cm))
		case "Service":
			require.NoError(t, yaml.UnmarshalStrict(d, &svc))
		case "Namespace":
			require.NoError(t, yaml.UnmarshalStrict(d, &ns))
		case "HorizontalPodAutoscaler":
			require.NoError(t, yaml.UnmarshalStrict(d, &hpa))
		}
	}
	require.Equal(t, "enabled", ns.Labels["istio-injection"])
	require.Nil(t, dep.Spec.Replicas, "the autoscaler owns the scale")
	require.GreaterOrEqual(t, *hpa.Spec.MinReplicas, int32(2))
	require.Equal(t, "Deployment", hpa.Spec.ScaleTargetRef.Kind)
	require.Equal(t, dep.Name, hpa.Spec.ScaleTargetRef.Name)
	pod := dep.Spec.Template.Spec
	require.Greater(t, time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second, drainDelay+shutdownTimeout)
	require.Len(t, pod.TopologySpreadConstraints, 2)
	c := pod.Containers[0]
	sc := c.SecurityContext
	require.True(t, *sc.RunAsNonRoot)
	require.Equal(t, int64(runAsUser), *sc.RunAsUser)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
	require.Equal(t, o.GRPCPort, c.ReadinessProbe.GRPC.Port)
	require.Equal(t, o.GRPCPort, c.LivenessProbe.GRPC.Port)
	require.False(t, c.Resources.Limits.Memory().IsZero())
	require.False(t, c.Resources.Requests.Cpu().IsZero())
	require.Equal(t, []string{"serve", "--config", ConfigPath}, c.Args)
	require.Equal(t, configMountPath, c.VolumeMounts[0].MountPath)
	require.Equal(t, cm.Name, pod.Volumes[0].ConfigMap.Name)
	require.Contains(t, cm.Data[ConfigKey], "requestBodyLimit: 1048576")
	require.Contains(t, cm.Data[ConfigKey], "afterCRS: |")
	require.Equal(t, "grpc", *svc.Spec.Ports[0].AppProtocol)
	require.Equal(t, o.GRPCPort, svc.Spec.Ports[0].Port)
	require.Equal(t, o.MetricsPort, svc.Spec.Ports[1].Port)
}

// The pod-mode container listens for gRPC on loopback only and is probed
// over the admin port.
func TestPodMode(t *testing.T) {
	o := DefaultOptions()
	cm, err := podConfigMap(o)
	require.NoError(t, err)
	require.Contains(t, cm.Data[ConfigKey], `grpcAddress: "127.0.0.1:9000"`)
	require.Empty(t, cm.Namespace, "lands in the application's namespace")
	c := podContainer(o)
	require.Nil(t, c.ReadinessProbe.GRPC)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	se := serviceEntry(o)
	require.Equal(t, []string{"meshwaf.local"}, se.Spec.Hosts)
	require.Equal(t, "127.0.0.1", se.Spec.Endpoints[0].Address)
	require.Equal(t, "STATIC", se.Spec.Resolution.String())
	require.Equal(t, "GRPC", se.Spec.Ports[0].Protocol)
	require.Equal(t, extensionProvider(o, ModePod).GetEnvoyExtAuthzGrpc().Service, se.Spec.Hosts[0])
}
