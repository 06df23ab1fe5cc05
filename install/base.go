package install

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meshwaf/meshwaf/internal/defaults"
	"github.com/meshwaf/meshwaf/internal/kubeyaml"
)

// Where the config lives in meshwaf's containers, and its drain timing.
const (
	configMountPath = "/etc/meshwaf"
	ConfigKey       = "meshwaf.yaml"
	// ConfigPath is what serve's --config names.
	ConfigPath      = configMountPath + "/" + ConfigKey
	drainDelay      = defaults.DrainDelay
	shutdownTimeout = defaults.ShutdownTimeout
	// terminationGrace exceeds drainDelay + shutdownTimeout.
	terminationGrace = 30
	// runAsUser is the numeric non-root user of the image.
	runAsUser       = 65532
	configVolume    = "config"
	containerName   = "meshwaf"
	grpcPortName    = "grpc"
	metricsPortName = "http-metrics"
	// podMetricsPortName: port names are unique per pod.
	podMetricsPortName = "meshwaf-admin"
)

// meshwafConfig is meshwaf's config file, the one place custom rules go
// (defaultProfile.afterCRS).
const meshwafConfig = `# meshwaf serve --config {{.Path}} (rendered by meshwaf manifests).
# Every key: examples/meshwaf.yaml. Check a change with meshwaf serve --config.
grpcAddress: "{{.GRPCAddress}}"
adminAddress: ":{{.MetricsPort}}"
failOpen: {{.FailOpen}}
failureStatus: {{.Status}}
logLevel: info
drainDelay: {{.DrainDelay}}
shutdownTimeout: {{.ShutdownTimeout}}
defaultProfile:
  paranoiaLevel: 1
  inboundAnomalyThreshold: 5
  mode: block
  # At least includeRequestBodyInCheck.maxRequestBytes ({{.MaxRequestBytes}}).
  requestBodyLimit: {{.RequestBodyLimit}}
  # Custom rules: SecLang loaded after the CRS rules, for exclusions
  # (SecRuleRemoveById, SecRuleUpdateTargetById) and rules of your own.
  afterCRS: |
    # Hosts such as db:8080 look numeric to rule 920350 (+3, below the threshold alone).
    # SecRuleRemoveById 920350
`

// configYAML is meshwaf's config file for the install: listen addresses,
// failure policy, drain timing and the body limit matching the options.
// grpcAddress is the gRPC listen address (":9000", or "127.0.0.1:9000" in
// pod mode).
func configYAML(o Options, grpcAddress string) ([]byte, error) {
	t, err := template.New("config").Parse(meshwafConfig)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{
		"Path": ConfigPath, "GRPCAddress": grpcAddress, "MetricsPort": o.MetricsPort,
		"FailOpen": o.FailOpen, "Status": o.StatusOnError,
		"DrainDelay": drainDelay.String(), "ShutdownTimeout": shutdownTimeout.String(),
		"MaxRequestBytes": o.MaxRequestBytes, "RequestBodyLimit": o.RequestBodyLimit,
	})
	return b.Bytes(), err
}

func (o Options) meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: o.labels()}
}

// baseObjects are the objects of meshwaf's central service, in apply
// order: Namespace, ServiceAccount, ConfigMap, Deployment, Service,
// PodDisruptionBudget, HorizontalPodAutoscaler, PeerAuthentication
// (STRICT) and the ALLOW policy that lets sidecars reach the gRPC port and
// scrapers the metrics port.
func baseObjects(o Options) ([]any, error) {
	cfg, err := configYAML(o, ":"+strconv.Itoa(int(o.GRPCPort)))
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Namespace, Labels: map[string]string{
			kubeyaml.ManagedByLabel: kubeyaml.ManagedBy, NameLabel: o.ServiceName, "istio-injection": "enabled",
		}},
	}
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: o.meta(o.ServiceName),
		// meshwaf never calls the API server; Istio mounts its own token.
		AutomountServiceAccountToken: ptr.To(false),
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: o.meta(o.ServiceName),
		Data:       map[string]string{ConfigKey: string(cfg)},
	}
	return []any{ns, sa, cm, o.deployment(), o.service(), o.pdb(), o.hpa(), o.peerAuthentication(), o.allowPolicy()}, nil
}

// container is meshwaf's container. In pod mode gRPC listens on loopback
// only, so the probes use the admin port over HTTP, and that port gets a
// name unlikely to clash with the application's.
func (o Options) container(pod bool) corev1.Container {
	metricsName := metricsPortName
	if pod {
		metricsName = podMetricsPortName
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		p := &corev1.Probe{PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 2}
		if pod {
			p.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(metricsName)}
		} else {
			p.GRPC = &corev1.GRPCAction{Port: o.GRPCPort}
		}
		return p
	}
	ports := []corev1.ContainerPort{{Name: metricsName, ContainerPort: o.MetricsPort, Protocol: corev1.ProtocolTCP}}
	if !pod {
		ports = append([]corev1.ContainerPort{{Name: grpcPortName, ContainerPort: o.GRPCPort, Protocol: corev1.ProtocolTCP}}, ports...)
	}
	return corev1.Container{
		Name:  containerName,
		Image: o.Image,
		Args:  []string{"serve", "--config", ConfigPath},
		Ports: ports,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		// Startup covers the rule compilation; readiness follows the
		// drain (NOT_SERVING / 503); liveness tolerates a whole drain.
		StartupProbe:   probe("/readyz", 2, 30),
		ReadinessProbe: probe("/readyz", 5, 1),
		LivenessProbe:  probe("/healthz", 10, 3),
		VolumeMounts:   []corev1.VolumeMount{{Name: configVolume, MountPath: configMountPath, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](runAsUser),
			RunAsGroup:               ptr.To[int64](runAsUser),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func configMapVolume(name string) corev1.Volume {
	return corev1.Volume{Name: configVolume, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}},
	}}
}

// imageTag is the tag of an image reference ("latest" when it has none).
func imageTag(image string) string {
	name := image
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		return name[i+1:]
	}
	return "latest"
}

func (o Options) deployment() *appsv1.Deployment {
	spread := func(key string) corev1.TopologySpreadConstraint {
		return corev1.TopologySpreadConstraint{
			MaxSkew: 1, TopologyKey: key, WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector: &metav1.LabelSelector{MatchLabels: o.selectorLabels()},
		}
	}
	podLabels := o.labels()
	podLabels["app"] = o.ServiceName // Istio's telemetry and Kiali key on app and version
	podLabels["version"] = imageTag(o.Image)
	drain := (drainDelay + shutdownTimeout).String()
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: o.meta(o.ServiceName),
		Spec: appsv1.DeploymentSpec{
			// No replicas: the HorizontalPodAutoscaler owns the scale
			// (minReplicas = o.Replicas). A replicas field would reset it
			// on every kubectl apply, scaling a busy meshwaf down.
			Selector: &metav1.LabelSelector{MatchLabels: o.selectorLabels()},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: podLabels,
					Annotations: map[string]string{
						// Istio merges these metrics into the sidecar's :15020, which
						// scrapers without a mesh identity can reach.
						"prometheus.io/scrape": "true",
						"prometheus.io/port":   strconv.Itoa(int(o.MetricsPort)),
						"prometheus.io/path":   "/metrics",
						// The sidecar keeps serving while meshwaf drains.
						"proxy.istio.io/config": fmt.Sprintf(`{"terminationDrainDuration": "%s"}`, drain),
					},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            o.ServiceName,
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](terminationGrace),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](runAsUser),
						RunAsGroup:     ptr.To[int64](runAsUser),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{
						spread("topology.kubernetes.io/zone"), spread("kubernetes.io/hostname"),
					},
					Containers: []corev1.Container{o.container(false)},
					Volumes:    []corev1.Volume{configMapVolume(o.ServiceName)},
				},
			},
		},
	}
}

func (o Options) service() *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: o.meta(o.ServiceName),
		Spec: corev1.ServiceSpec{
			Selector: o.selectorLabels(),
			Ports: []corev1.ServicePort{
				{Name: grpcPortName, Port: o.GRPCPort, TargetPort: intstr.FromString(grpcPortName), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("grpc")},
				{Name: metricsPortName, Port: o.MetricsPort, TargetPort: intstr.FromString(metricsPortName), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("http")},
			},
		},
	}
}

func (o Options) pdb() *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: o.meta(o.ServiceName),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(1)),
			Selector:     &metav1.LabelSelector{MatchLabels: o.selectorLabels()},
		},
	}
}

func (o Options) hpa() *autoscalingv2.HorizontalPodAutoscaler {
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: o.meta(o.ServiceName),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: o.ServiceName},
			MinReplicas:    ptr.To(o.Replicas),
			MaxReplicas:    o.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](70)},
				},
			}},
		},
	}
}

func (o Options) peerAuthentication() *securityv1.PeerAuthentication {
	return &securityv1.PeerAuthentication{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "PeerAuthentication"},
		ObjectMeta: o.meta(o.ServiceName + "-strict"),
		Spec: securityv1beta1.PeerAuthentication{
			Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT},
		},
	}
}

// allowPolicy lets the callers (every mesh identity, or the sidecars of
// CallerNamespaces) reach the gRPC port and the scraper namespaces GET
// /metrics; with it, everything else to meshwaf is denied.
func (o Options) allowPolicy() *securityv1.AuthorizationPolicy {
	callers := &securityv1beta1.Source{Principals: []string{"*"}}
	if len(o.CallerNamespaces) > 0 {
		callers = &securityv1beta1.Source{Namespaces: o.CallerNamespaces}
	}
	rules := []*securityv1beta1.Rule{{
		From: []*securityv1beta1.Rule_From{{Source: callers}},
		To:   []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Ports: []string{strconv.Itoa(int(o.GRPCPort))}}}},
	}}
	if len(o.ScraperNamespaces) > 0 {
		rules = append(rules, &securityv1beta1.Rule{
			From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: o.ScraperNamespaces}}},
			To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{
				Ports: []string{strconv.Itoa(int(o.MetricsPort))}, Methods: []string{"GET"}, Paths: []string{"/metrics"},
			}}},
		})
	}
	return &securityv1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
		ObjectMeta: o.meta(o.ServiceName + "-callers"),
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: o.selectorLabels()},
			Action:   securityv1beta1.AuthorizationPolicy_ALLOW,
			Rules:    rules,
		},
	}
}
