package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshwaf/meshwaf/install"
)

// deleteAnnotation in a fixture removes the base's object of that kind,
// namespace and name.
const deleteAnnotation = "test.meshwaf.io/delete"

// testTarget is the Target of install's defaults, with a config reader
// for the fields the checks use (cmd/meshwaf wires the real decoder and
// tests it there).
func testTarget() Target {
	t := NewTarget(install.DefaultOptions())
	t.ParseConfig = parseTestConfig
	return t
}

func parseTestConfig(data []byte) (MeshwafConfig, error) {
	var c struct {
		QueueWait      string `yaml:"queueWait"`
		DefaultProfile struct {
			RequestBodyLimit int  `yaml:"requestBodyLimit"`
			AllowPartialBody bool `yaml:"allowPartialBody"`
		} `yaml:"defaultProfile"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return MeshwafConfig{}, err
	}
	out := MeshwafConfig{RequestBodyLimit: c.DefaultProfile.RequestBodyLimit, AllowPartialBody: c.DefaultProfile.AllowPartialBody}
	if c.QueueWait != "" {
		d, err := time.ParseDuration(c.QueueWait)
		if err != nil {
			return MeshwafConfig{}, err
		}
		out.QueueWait = d
	}
	return out, nil
}

// fixtureObject is one object of a fixture file, typed.
type fixtureObject struct {
	key string // kind/namespace/name
	obj runtime.Object
	del bool
}

// readFixture decodes a multi-document YAML file of testdata into typed
// objects.
func readFixture(t *testing.T, name string) []fixtureObject {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return decodeFixture(t, name, data, false)
}

// decodeFixture decodes multi-document YAML into typed objects; objects
// of kinds the checks do not read are an error, or skipped with skip.
func decodeFixture(t *testing.T, name string, data []byte, skip bool) []fixtureObject {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []fixtureObject
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("%s: %v", name, err)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var meta struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var obj runtime.Object
		switch meta.Kind {
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Service":
			obj = &corev1.Service{}
		case "Pod":
			obj = &corev1.Pod{}
		case "Namespace":
			obj = &corev1.Namespace{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "AuthorizationPolicy":
			obj = &securityv1.AuthorizationPolicy{}
		case "EnvoyFilter":
			obj = &networkingv1alpha3.EnvoyFilter{}
		default:
			if skip {
				continue
			}
			t.Fatalf("%s: kind %q: add it to decodeFixture", name, meta.Kind)
		}
		if err := json.Unmarshal(raw, obj); err != nil {
			t.Fatalf("%s: %s %s: %v", name, meta.Kind, meta.Metadata.Name, err)
		}
		out = append(out, fixtureObject{
			key: meta.Kind + "/" + meta.Metadata.Namespace + "/" + meta.Metadata.Name,
			obj: obj,
			del: meta.Metadata.Annotations[deleteAnnotation] == "true",
		})
	}
}

// loadFixture is base.yaml changed by the named file ("" for none): an
// object of the same kind, namespace and name replaces the base's, one
// with the delete annotation removes it, others are added.
func loadFixture(t *testing.T, name string) []runtime.Object {
	t.Helper()
	objs := readFixture(t, "base.yaml")
	if name != "" {
		for _, o := range readFixture(t, name) {
			i := 0
			for ; i < len(objs) && objs[i].key != o.key; i++ {
			}
			switch {
			case o.del && i == len(objs):
				t.Fatalf("%s: deletes %s, which base.yaml does not have", name, o.key)
			case o.del:
				objs = append(objs[:i], objs[i+1:]...)
			case i == len(objs):
				objs = append(objs, o)
			default:
				objs[i] = o
			}
		}
	}
	out := make([]runtime.Object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.obj)
	}
	return out
}

// readSnapshot stores objs in fake clientsets and takes the snapshot
// through Reader, with probe answering the health probe.
func readSnapshot(t *testing.T, objs []runtime.Object, probe func(context.Context, string) Health, o ReadOptions) *Snapshot {
	t.Helper()
	var kube, istio []runtime.Object
	for _, obj := range objs {
		switch obj.(type) {
		case *securityv1.AuthorizationPolicy, *networkingv1alpha3.EnvoyFilter:
			istio = append(istio, obj)
		default:
			kube = append(kube, obj)
		}
	}
	k, i := kubefake.NewClientset(kube...), istiofake.NewSimpleClientset(istio...)
	r := NewReader(Clients{Core: k.CoreV1(), Apps: k.AppsV1(), Security: i.SecurityV1(), Networking: i.NetworkingV1alpha3()}, probe)
	s, err := r.Read(context.Background(), testTarget(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serving is a probe stub that answers SERVING.
func serving(_ context.Context, address string) Health {
	return Health{Probed: true, Address: address, Reachable: true, Status: "SERVING"}
}
