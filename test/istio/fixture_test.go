package istiotest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
)

// graph is the part of a meshwaf ServiceGraph the tests need to build the
// workloads and the expected flows. It is read leniently: the product
// validates the graph; the tests only read it.
type graph struct {
	Spec struct {
		TrustDomain string `json:"trustDomain"`
		Services    []struct {
			Name           string            `json:"name"`
			Namespace      string            `json:"namespace"`
			ServiceAccount string            `json:"serviceAccount"`
			Selector       map[string]string `json:"selector"`
			Ports          []struct {
				Port     int32  `json:"port"`
				Protocol string `json:"protocol"`
			} `json:"ports"`
			Ingress bool `json:"ingress"`
			Inspect bool `json:"inspect"`
		} `json:"services"`
		Edges []struct {
			From  string  `json:"from"`
			To    string  `json:"to"`
			Ports []int32 `json:"ports"`
		} `json:"edges"`
	} `json:"spec"`
}

const shopGraph = "examples/shop-graph.yaml"

func readGraph(t *testing.T, path string) *graph {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.repo, path))
	if err != nil {
		t.Fatalf("the seed graph: %v", err)
	}
	g := &graph{}
	if err := yaml.Unmarshal(data, g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if g.Spec.TrustDomain == "" {
		g.Spec.TrustDomain = "cluster.local"
	}
	for i := range g.Spec.Services {
		s := &g.Spec.Services[i]
		if s.Namespace == "" {
			s.Namespace = "default"
		}
		if s.ServiceAccount == "" {
			s.ServiceAccount = s.Name
		}
		if len(s.Selector) == 0 {
			s.Selector = map[string]string{"app": s.Name}
		}
	}
	return g
}

// workload is one pod of the fixture and the sidecar proxy that runs in it.
type workload struct {
	name, namespace, serviceAccount string
	labels                          map[string]string
	ip                              string
	ports                           []int32
	// protocols are the graph protocols of ports (HTTP when absent).
	protocols map[int32]string
	inspect   bool
}

func (w workload) principal(trustDomain string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, w.namespace, w.serviceAccount)
}

// graphWorkloads turns each service of the graph into one workload; a
// service with inspect: true carries the opt-in label.
func graphWorkloads(g *graph) []workload {
	var ws []workload
	for i, s := range g.Spec.Services {
		labels := map[string]string{}
		for k, v := range s.Selector {
			labels[k] = v
		}
		if s.Inspect {
			labels[optInLabel] = optInValue
		}
		w := workload{
			name: s.Name, namespace: s.Namespace, serviceAccount: s.ServiceAccount,
			labels: labels, ip: fmt.Sprintf("10.10.0.%d", i+10), inspect: s.Inspect,
		}
		for _, p := range s.Ports {
			w.ports = append(w.ports, p.Port)
		}
		ws = append(ws, w)
	}
	return ws
}

const (
	optInLabel = "meshwaf.io/inspect"
	optInValue = "enabled"
)

// kubeObjects renders the Kubernetes side of workloads: a ServiceAccount,
// a Service with HTTP ports, a running, ready Pod and an EndpointSlice.
func kubeObjects(ws []workload) []runtime.Object {
	var objs []runtime.Object
	namespaces, accounts := map[string]bool{}, map[string]bool{} // workloads may share a service account
	for i, w := range ws {
		if !namespaces[w.namespace] {
			namespaces[w.namespace] = true
			objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.namespace}})
		}
		selector := map[string]string{}
		for k, v := range w.labels {
			if k != optInLabel {
				selector[k] = v
			}
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: w.namespace},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.10.%d", i+10),
				Selector:  selector,
			},
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name: w.name, Namespace: w.namespace,
				Labels: map[string]string{discoveryv1.LabelServiceName: w.name},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{w.ip},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: w.name + "-0", Namespace: w.namespace},
			}},
		}
		for _, p := range w.ports {
			proto := appProtocol(w.protocols[p])
			name := fmt.Sprintf("%s-%d", proto, p)
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
				Name: name, Port: p, TargetPort: intstr.FromInt32(p), Protocol: corev1.ProtocolTCP,
				AppProtocol: ptr(proto),
			})
			slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{
				Name: ptr(name), Port: ptr(p), Protocol: ptr(corev1.ProtocolTCP),
			})
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: w.name + "-0", Namespace: w.namespace, Labels: w.labels},
			Spec: corev1.PodSpec{
				ServiceAccountName: w.serviceAccount,
				NodeName:           "node-1",
				Containers:         []corev1.Container{{Name: "app", Image: "app"}},
			},
			Status: corev1.PodStatus{
				Phase:      corev1.PodRunning,
				PodIP:      w.ip,
				PodIPs:     []corev1.PodIP{{IP: w.ip}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			},
		}
		if sa := w.namespace + "/" + w.serviceAccount; !accounts[sa] {
			accounts[sa] = true
			objs = append(objs, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: w.serviceAccount, Namespace: w.namespace}})
		}
		objs = append(objs, svc, slice, pod)
	}
	return objs
}

func ptr[T any](v T) *T { return &v }

// appProtocol is the Kubernetes appProtocol (and port name prefix) of a
// graph protocol; no protocol means HTTP.
func appProtocol(graphProtocol string) string {
	if graphProtocol == "" {
		return "http"
	}
	return strings.ToLower(graphProtocol)
}

// istioConfigs parses the Istio objects of a rendered output with Istio's
// own decoder and validation (what istiod's webhook runs); the documents of
// other kinds come back separately.
func istioConfigs(t *testing.T, source, yamlText string) ([]config.Config, []crd.IstioKind) {
	t.Helper()
	cfgs, others, err := crd.ParseInputs(yamlText)
	if err != nil {
		t.Fatalf("%s: Istio rejects the output: %v", source, err)
	}
	return cfgs, others
}

// serviceObjects decodes the Services and Namespaces among documents that
// Istio did not take, so the discovery server knows, e.g., meshwaf's own
// Service.
func serviceObjects(t *testing.T, others []crd.IstioKind) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, o := range others {
		if o.APIVersion != "v1" || (o.Kind != "Service" && o.Kind != "Namespace") {
			continue
		}
		data, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "Service":
			s := &corev1.Service{}
			if err := yaml.Unmarshal(data, s); err != nil {
				t.Fatal(err)
			}
			if s.Spec.ClusterIP == "" {
				s.Spec.ClusterIP = fmt.Sprintf("10.96.20.%d", len(objs)+1)
			}
			objs = append(objs, s)
		case "Namespace":
			n := &corev1.Namespace{}
			if err := yaml.Unmarshal(data, n); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, n)
		}
	}
	return objs
}

// meshConfigFrom reads spec.meshConfig of the IstioOperator among others and
// applies Istio's defaults to it, as istiod would.
func meshConfigFrom(t *testing.T, others []crd.IstioKind) *meshConfig {
	t.Helper()
	for _, o := range others {
		if o.Kind != "IstioOperator" {
			continue
		}
		var spec map[string]json.RawMessage
		if err := json.Unmarshal(o.Spec, &spec); err != nil {
			t.Fatalf("IstioOperator %s: %v", o.Name, err)
		}
		mc, ok := spec["meshConfig"]
		if !ok {
			t.Fatalf("IstioOperator %s: no spec.meshConfig", o.Name)
		}
		// JSON is YAML: Istio's own MeshConfig reader takes it as it is.
		m, err := mesh.ApplyMeshConfigDefaults(string(mc))
		if err != nil {
			t.Fatalf("IstioOperator %s: spec.meshConfig: %v", o.Name, err)
		}
		return m
	}
	t.Fatal("no IstioOperator with a meshConfig in the output")
	return nil
}

// newServer starts Istio's fake discovery server with the configs and
// Kubernetes objects; a nil mesh config means Istio's defaults.
func newServer(t *testing.T, cfgs []config.Config, objs []runtime.Object, mc *meshConfig) *xds.FakeDiscoveryServer {
	t.Helper()
	return xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		Configs:           cfgs,
		KubernetesObjects: objs,
		MeshConfig:        mc,
	})
}

// proxy is the sidecar of w, set up the way istiod sees a connecting one.
func proxy(s *xds.FakeDiscoveryServer, w workload) *model.Proxy {
	return s.SetupProxy(&model.Proxy{
		ID:              w.name + "-0." + w.namespace,
		IPAddresses:     []string{w.ip},
		ConfigNamespace: w.namespace,
		Labels:          w.labels,
		Metadata: &model.NodeMetadata{
			Namespace:      w.namespace,
			Labels:         w.labels,
			ServiceAccount: w.serviceAccount,
		},
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func joinSet(m map[string]bool) string {
	return strings.Join(sortedKeys(m), ", ")
}

// installWorkload is meshwaf's own workload as the mesh-mode install
// renders it: the Deployment's namespace, service account and pod labels,
// with the gRPC and metrics ports.
func installWorkload(t *testing.T) workload {
	t.Helper()
	_, others := istioConfigs(t, "manifests --mode mesh", meshwaf(t, "manifests", "--mode", "mesh"))
	for _, o := range others {
		if o.Kind != "Deployment" {
			continue
		}
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		d := &appsv1.Deployment{}
		if err := json.Unmarshal(data, d); err != nil {
			t.Fatal(err)
		}
		sa := d.Spec.Template.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		return workload{
			name: d.Name, namespace: d.Namespace, serviceAccount: sa,
			labels: d.Spec.Template.Labels, ip: "10.10.2.10", ports: []int32{9000, 9090},
		}
	}
	t.Fatal("manifests --mode mesh: no Deployment")
	return workload{}
}
