package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meshwaf/meshwaf/install"
)

// What `meshwaf manifests` installs passes doctor: the objects of the mesh
// and envoyfilter modes, the mesh config that `istioctl install -f` takes
// from the IstioOperator overlay, and an opted-in workload give no error
// or warning, with the Deployment's replicas available (no controller runs
// here to make them so).
func TestInstalledPassesDoctor(t *testing.T) {
	o := install.DefaultOptions()
	for _, mode := range []install.Mode{install.ModeMesh, install.ModeEnvoyFilter} {
		t.Run(string(mode), func(t *testing.T) {
			data, err := install.Render(o, mode, install.PartObjects)
			require.NoError(t, err)
			var objs []runtime.Object
			for _, fo := range decodeFixture(t, "manifests --mode "+string(mode), data, true) {
				if d, ok := fo.obj.(*appsv1.Deployment); ok {
					// The HPA owns spec.replicas (the server defaults it to 1).
					d.Status.AvailableReplicas = o.Replicas
				}
				objs = append(objs, fo.obj)
			}
			mesh := "accessLogFile: /dev/stdout\n"
			if mode == install.ModeMesh {
				op, err := install.Render(o, mode, install.PartIstioOperator)
				require.NoError(t, err)
				var overlay struct {
					Spec struct {
						MeshConfig map[string]any `json:"meshConfig"`
					} `json:"spec"`
				}
				require.NoError(t, yaml.Unmarshal(op, &overlay))
				m, err := yaml.Marshal(overlay.Spec.MeshConfig)
				require.NoError(t, err)
				mesh = string(m)
			}
			objs = append(objs,
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}, Data: map[string]string{"mesh": mesh}},
				&appsv1.Deployment{
					ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
					Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
						Labels: map[string]string{"app": "cart", o.OptInLabel: o.OptInValue},
					}}},
				})
			fs := Diagnose(readSnapshot(t, objs, serving, ReadOptions{}), testTarget())
			require.Equal(t, []Code{CodeHealthServing, CodeWorkloadInspected}, codesOf(fs), "findings: %+v", fs)
			require.Contains(t, fs[len(fs)-1].Message, map[install.Mode]string{
				install.ModeMesh: "mesh (AuthorizationPolicy istio-system/meshwaf-inspect)", install.ModeEnvoyFilter: "envoyfilter (EnvoyFilter istio-system/meshwaf-ext-authz)",
			}[mode])
		})
	}
}
