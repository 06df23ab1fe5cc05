package install

import (
	"fmt"

	networkingv1alpha3api "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podConfigMapName names the ConfigMap of pod mode, created in each
// application namespace.
const podConfigMapName = "meshwaf-pod"

// podContainer is the meshwaf container to run beside an application in
// pod mode. gRPC listens on 127.0.0.1 only: the pod's sidecar reaches it
// through the ServiceEntry, nothing outside the pod can. The probes use
// the admin port (GET /readyz, /healthz), which kubelet can reach.
func podContainer(o Options) corev1.Container {
	c := o.container(true)
	c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
	c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("128Mi")
	c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("1")
	c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("384Mi")
	c.VolumeMounts[0].Name = podConfigMapName
	return c
}

// podConfigMap is meshwaf's config for pod mode; it carries no namespace
// so that it lands in the application's namespace.
func podConfigMap(o Options) (*corev1.ConfigMap, error) {
	cfg, err := configYAML(o, fmt.Sprintf("127.0.0.1:%d", o.GRPCPort))
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: podConfigMapName, Labels: o.labels()},
		Data:       map[string]string{ConfigKey: string(cfg)},
	}, nil
}

// podPatch is a strategic-merge patch for an application Deployment that
// adds the meshwaf container, its config volume and the opt-in label. Its
// name is a placeholder: apply it with a kustomize patch target.
func podPatch(o Options) *appsv1.Deployment {
	vol := configMapVolume(podConfigMapName)
	vol.Name = podConfigMapName
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "any-opted-in-deployment"},
		Spec: appsv1.DeploymentSpec{
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: o.optIn()},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{podContainer(o)},
					Volumes:    []corev1.Volume{vol},
				},
			},
		},
	}
}

// serviceEntry names the pod-local meshwaf (LocalHost, port GRPCPort,
// endpoint 127.0.0.1) so that Istio can build a cluster for the pod mode's
// extension provider. It lives in the root namespace and is exported to
// every namespace.
func serviceEntry(o Options) *networkingv1.ServiceEntry {
	return &networkingv1.ServiceEntry{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "ServiceEntry"},
		ObjectMeta: metav1.ObjectMeta{
			Name: o.ServiceName + "-local", Namespace: o.RootNamespace, Labels: o.labels(),
			Annotations: map[string]string{NoteAnnotation: "the meshwaf container in each opted-in pod, on the pod's loopback"},
		},
		Spec: networkingv1alpha3api.ServiceEntry{
			Hosts:      []string{o.LocalHost},
			Ports:      []*networkingv1alpha3api.ServicePort{{Number: uint32(o.GRPCPort), Protocol: "GRPC", Name: grpcPortName}},
			Resolution: networkingv1alpha3api.ServiceEntry_STATIC,
			Endpoints:  []*networkingv1alpha3api.WorkloadEntry{{Address: "127.0.0.1"}},
			ExportTo:   []string{"*"},
		},
	}
}
