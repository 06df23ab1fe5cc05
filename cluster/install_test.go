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

// What `meshwaf manifests` installs passes doctor: the objects of the mesh,
// envoyfilter and waypoint modes, the mesh config that `istioctl install
// -f` takes from the IstioOperator overlay, and an opted-in workload (in
// the waypoint mode, the proxy of the targeted waypoint) give no error
// or warning, with the Deployment's replicas available (no controller runs
// here to make them so).
func TestInstalledPassesDoctor(t *testing.T) {
	o := install.DefaultOptions()
	waypoint := o.WaypointNamespaces[0] + "/" + o.WaypointName
	for _, mode := range []install.Mode{install.ModeMesh, install.ModeEnvoyFilter, install.ModeWaypoint} {
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
			if mode != install.ModeEnvoyFilter {
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
			objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}, Data: map[string]string{"mesh": mesh}})
			if mode == install.ModeWaypoint {
				// The waypoint mode needs no label on workloads: its policy
				// targets the waypoint's Gateway, whose proxy runs.
				objs = append(objs, &appsv1.Deployment{
					ObjectMeta: metav1.ObjectMeta{Name: o.WaypointName, Namespace: o.WaypointNamespaces[0]},
					Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
						Labels: map[string]string{GatewayNameLabel: o.WaypointName, WaypointManagedLabel: WaypointManagedValue},
					}}},
				})
			} else {
				objs = append(objs, &appsv1.Deployment{
					ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
					Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
						Labels: map[string]string{"app": "cart", o.OptInLabel: o.OptInValue},
					}}},
				})
			}
			fs := Diagnose(readSnapshot(t, objs, serving, ReadOptions{}), testTarget())
			require.Equal(t, []Code{CodeHealthServing, CodeWorkloadInspected}, codesOf(fs), "findings: %+v", fs)
			var inspected []string
			for _, f := range fs {
				if f.Code == CodeWorkloadInspected {
					inspected = append(inspected, f.Object.String()+": "+f.Message)
				}
			}
			require.Equal(t, map[install.Mode][]string{
				install.ModeMesh:        {"Deployment shop/cart: inspected by meshwaf: mesh (AuthorizationPolicy istio-system/meshwaf-inspect)"},
				install.ModeEnvoyFilter: {"Deployment shop/cart: inspected by meshwaf: envoyfilter (EnvoyFilter istio-system/meshwaf-ext-authz)"},
				install.ModeWaypoint:    {"Gateway " + waypoint + ": inspected by meshwaf: waypoint (AuthorizationPolicy " + o.WaypointNamespaces[0] + "/meshwaf-inspect)"},
			}[mode], inspected)
		})
	}
}
