package install

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"sigs.k8s.io/yaml"
)

// target is a targetRef as kind/name, group omitted for the core group.
func targets(ap *securityv1.AuthorizationPolicy) []string {
	var out []string
	for _, r := range ap.Spec.TargetRefs {
		s := r.Kind + "/" + r.Name
		if r.Group != "" {
			s = r.Group + "/" + s
		}
		out = append(out, s)
	}
	return out
}

// The waypoint mode's policies: one per namespace, ordered by namespace,
// attached with targetRefs (never a selector) to the namespace's waypoint
// Gateway or to the Services named, sending everything but the excluded
// paths to meshwaf's provider.
func TestWaypointPolicies(t *testing.T) {
	tests := []struct {
		name       string
		namespaces []string
		services   []ServiceRef
		want       map[string][]string // namespace -> targetRefs, in policy order
		order      []string
	}{
		{"default", DefaultWaypointNamespaces(), nil,
			map[string][]string{"default": {"gateway.networking.k8s.io/Gateway/waypoint"}}, []string{"default"}},
		{"namespaces", []string{"shop", "billing"}, nil, map[string][]string{
			"billing": {"gateway.networking.k8s.io/Gateway/waypoint"},
			"shop":    {"gateway.networking.k8s.io/Gateway/waypoint"},
		}, []string{"billing", "shop"}},
		{"services sorted by name", nil, []ServiceRef{{"shop", "cart"}, {"shop", "api"}, {"billing", "ledger"}}, map[string][]string{
			"billing": {"Service/ledger"},
			"shop":    {"Service/api", "Service/cart"},
		}, []string{"billing", "shop"}},
		{"both", []string{"shop"}, []ServiceRef{{"billing", "ledger"}}, map[string][]string{
			"billing": {"Service/ledger"},
			"shop":    {"gateway.networking.k8s.io/Gateway/waypoint"},
		}, []string{"billing", "shop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			o.WaypointNamespaces, o.WaypointServices = tt.namespaces, tt.services
			objs, err := objects(o, ModeWaypoint, PartObjects)
			require.NoError(t, err)
			base, err := baseObjects(o)
			require.NoError(t, err)
			var order []string
			for _, obj := range objs[len(base):] {
				out, err := marshal(obj)
				require.NoError(t, err)
				var ap securityv1.AuthorizationPolicy
				require.NoError(t, yaml.UnmarshalStrict(out, &ap))
				order = append(order, ap.Namespace)
				require.Equal(t, tt.want[ap.Namespace], targets(&ap), ap.Namespace)
				require.Nil(t, ap.Spec.Selector, "waypoints ignore selector-based policies")
				require.Equal(t, securityv1beta1.AuthorizationPolicy_CUSTOM, ap.Spec.Action)
				require.Equal(t, o.ProviderName, ap.Spec.GetProvider().GetName(), "the mesh mode's provider")
				require.Equal(t, DefaultExcludePaths(), ap.Spec.Rules[0].To[0].Operation.NotPaths)
				require.Equal(t, "meshwaf-inspect", ap.Name)
				require.Contains(t, ap.Annotations[NoteAnnotation], "PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS")
				require.NotContains(t, string(out), "\n  selector:", "no selector field in the YAML either")
			}
			require.Equal(t, tt.order, order)
		})
	}
	o := customOptions()
	objs, err := waypointPolicies(o)
	require.NoError(t, err)
	require.Len(t, objs, 3)
	require.Equal(t, []string{"gateway.networking.k8s.io/Gateway/shop-waypoint"}, targets(objs[0].(*securityv1.AuthorizationPolicy)), "--waypoint-name")
	require.Equal(t, "crs-waf", objs[0].(*securityv1.AuthorizationPolicy).Spec.GetProvider().GetName())
}

func TestWaypointOptionsValidate(t *testing.T) {
	many := make([]ServiceRef, maxTargetRefs+1)
	for i := range many {
		many[i] = ServiceRef{"shop", "svc-" + strings.Repeat("a", i+1)}
	}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"nothing to inspect", func(o *Options) { o.WaypointNamespaces = nil }, "name at least one to inspect"},
		{"bad waypoint name", func(o *Options) { o.WaypointName = "Waypoint" }, `waypoint name "Waypoint"`},
		{"bad namespace", func(o *Options) { o.WaypointNamespaces = []string{"Shop"} }, `waypoint namespace "Shop"`},
		{"namespace twice", func(o *Options) { o.WaypointNamespaces = []string{"shop", "shop"} }, `waypoint namespace "shop": named twice`},
		{"service twice", func(o *Options) { o.WaypointServices = []ServiceRef{{"shop", "a"}, {"shop", "a"}} }, `waypoint service "shop/a": named twice`},
		{"service name", func(o *Options) { o.WaypointServices = []ServiceRef{{"shop", "1cart"}} }, `waypoint service "shop/1cart": name`},
		{"service of a whole namespace", func(o *Options) { o.WaypointServices = []ServiceRef{{"default", "a"}} },
			`waypoint service "default/a": its namespace is inspected whole`},
		{"too many targetRefs", func(o *Options) { o.WaypointServices = many }, "at most 16 targetRefs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.edit(&o)
			_, err := Render(o, ModeWaypoint, PartObjects)
			require.ErrorContains(t, err, tt.want)
			require.ErrorAs(t, err, new(*OptionsError), "the caller's input")
			_, err = KustomizeTree(o)
			require.ErrorContains(t, err, tt.want, "the tree has the waypoint overlay")
			_, err = Render(o, ModeMesh, PartObjects)
			require.NoError(t, err, "other modes do not read the waypoint options")
		})
	}
}
